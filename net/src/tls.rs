//! TLS 1.3 over the stream transports (RFC 5352 §9.3, RFC 5353 §6.3, RFC 5355 §2: mutual
//! authentication, integrity and confidentiality between PEs, PUs and PRs): rustls with the ring
//! provider, certificates, keys and CA bundles read from PEM files, and the identities a peer's
//! verified certificate names.
//!
//! Sans-I/O: a [`TlsSession`] takes the bytes received from the socket and gives the bytes to
//! send, so that the registrar's epoll and io_uring drivers, the blocking client
//! [`crate::Connection`] and the load generator drive the same code. SCTP carries no TLS here:
//! RFC 3436 needs one-to-one associations and one TLS session per stream, which the registrar's
//! one-to-many SCTP listener does not have; RFC 5355 §3 names IPsec as the alternative
//! (`docs/security.md`).

use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::NetError;
pub use rserpool_protocol::url::ClientCertificate;

/// A TLS identity's files and the CAs it trusts, as the configuration names them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM), the end entity's first.
    pub certificate: PathBuf,
    /// The private key of the certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// The CA bundle (PEM) that vouches for the peers' certificates; empty for none.
    pub ca: PathBuf,
}

/// The ring provider: it builds without cmake (aws-lc-rs needs it), at the price of no
/// post-quantum key exchange, for which rustls marks it deprecated.
fn provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(file: &Path, what: &str, why: impl std::fmt::Display) -> NetError {
    NetError::Tls(format!("{what} `{}`: {why}", file.display()))
}

fn certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let chain = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(file, "cannot read the PEM certificates in", e))?;
    if chain.is_empty() {
        return Err(tls_error(
            file,
            "no certificate in",
            "give a PEM file with at least one `BEGIN CERTIFICATE` block",
        ));
    }
    Ok(chain)
}

fn private_key(file: &Path) -> Result<PrivateKeyDer<'static>, NetError> {
    PrivateKeyDer::from_pem_file(file).map_err(|e| {
        tls_error(
            file,
            "cannot read a private key from",
            format!("{e} (give a PEM PKCS#8, PKCS#1 or SEC1 key)"),
        )
    })
}

fn roots(file: &Path) -> Result<Arc<RootCertStore>, NetError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(file)? {
        roots
            .add(certificate)
            .map_err(|e| tls_error(file, "a CA certificate in", format!("is not usable: {e}")))?;
    }
    Ok(Arc::new(roots))
}

fn config_error(files: &TlsFiles, e: rustls::Error) -> NetError {
    NetError::Tls(format!(
        "the certificate `{}` and private key `{}` cannot serve TLS: {e} (the key must belong to \
         the chain's first certificate)",
        files.certificate.display(),
        files.private_key.display()
    ))
}

/// The registrar's side of TLS: one rustls configuration per [`ClientCertificate`] mode a
/// listener may ask for, all built from one certificate, key and CA bundle. Reloading (SIGHUP)
/// builds a new one; sessions already running keep the one they started with.
#[derive(Debug, Clone)]
pub struct ServerTls {
    required: Option<Arc<ServerConfig>>,
    optional: Option<Arc<ServerConfig>>,
    none: Arc<ServerConfig>,
}

impl ServerTls {
    /// Reads the certificate chain and key of `files`, and its CA bundle (needed to verify
    /// client certificates) if one is named.
    pub fn load(files: &TlsFiles) -> Result<Self, NetError> {
        let chain = certificates(&files.certificate)?;
        let key = private_key(&files.private_key)?;
        let build = |verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>| {
            let builder = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| config_error(files, e))?;
            let builder = match verifier {
                Some(v) => builder.with_client_cert_verifier(v),
                None => builder.with_no_client_auth(),
            };
            builder
                .with_single_cert(chain.clone(), key.clone_key())
                .map(Arc::new)
                .map_err(|e| config_error(files, e))
        };
        let (required, optional) = if files.ca.as_os_str().is_empty() {
            (None, None)
        } else {
            let roots = roots(&files.ca)?;
            let verifier = |optional: bool| {
                let builder =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
                let builder = if optional {
                    builder.allow_unauthenticated()
                } else {
                    builder
                };
                builder.build().map_err(|e| {
                    tls_error(
                        &files.ca,
                        "the CA bundle",
                        format!("cannot verify clients: {e}"),
                    )
                })
            };
            (
                Some(build(Some(verifier(false)?))?),
                Some(build(Some(verifier(true)?))?),
            )
        };
        Ok(Self {
            required,
            optional,
            none: build(None)?,
        })
    }

    /// Whether client certificates can be verified (a CA bundle was given).
    pub fn verifies_clients(&self) -> bool {
        self.required.is_some()
    }

    /// A session for a connection accepted on a listener that asks `asks` of its clients;
    /// `None` when it asks for certificates and no CA bundle was given (the configuration check
    /// refuses that before any listener opens).
    pub fn accept(&self, asks: ClientCertificate) -> Option<TlsSession> {
        let config = match asks {
            ClientCertificate::Required => self.required.clone()?,
            ClientCertificate::Optional => self.optional.clone()?,
            ClientCertificate::None => self.none.clone(),
        };
        let mut conn = rustls::ServerConnection::new(config).ok()?;
        // The owner bounds what waits to be sent (the registrar's high-water mark).
        conn.set_buffer_limit(None);
        Some(TlsSession { conn: conn.into() })
    }
}

/// A client's side of TLS (PEs, PUs, the load generator, and a PR connecting to its ENRP
/// peers): the CA bundle that vouches for the server, and the client's own certificate if it
/// has one.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// Trusts the CAs of `files.ca` and, when `files.certificate` is named, presents that chain
    /// with `files.private_key`.
    pub fn load(files: &TlsFiles) -> Result<Self, NetError> {
        if files.ca.as_os_str().is_empty() {
            return Err(NetError::Tls(
                "TLS to a registrar needs the CA bundle that vouches for its certificate: give \
                 one (a PEM file)"
                    .into(),
            ));
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| config_error(files, e))?
            .with_root_certificates(roots(&files.ca)?);
        let config = if files.certificate.as_os_str().is_empty() {
            builder.with_no_client_auth()
        } else {
            builder
                .with_client_auth_cert(
                    certificates(&files.certificate)?,
                    private_key(&files.private_key)?,
                )
                .map_err(|e| config_error(files, e))?
        };
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// A session to the server `name` (its certificate must name it: a DNS name, or an IP
    /// address in a subject alternative name). The client speaks first: call
    /// [`TlsSession::take_outgoing`].
    pub fn connect(&self, name: ServerName<'static>) -> Result<TlsSession, NetError> {
        let mut conn = rustls::ClientConnection::new(self.config.clone(), name)
            .map_err(|e| NetError::Tls(format!("cannot start a TLS session: {e}")))?;
        conn.set_buffer_limit(None);
        Ok(TlsSession { conn: conn.into() })
    }
}

/// Runs a client's handshake to its end over a blocking `stream` (within its time-outs).
/// Returns the plaintext that arrived with the last handshake records, if any.
pub fn handshake_blocking(
    session: &mut TlsSession,
    mut stream: impl io::Read + io::Write,
) -> io::Result<Vec<u8>> {
    let (mut out, mut plain, mut chunk) = (Vec::new(), Vec::new(), vec![0u8; 16 * 1024]);
    loop {
        out.clear();
        session.take_outgoing(&mut out);
        stream.write_all(&out)?;
        if !session.is_handshaking() {
            return Ok(plain);
        }
        let n = loop {
            match stream.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection during the TLS handshake (does it listen for TLS, and does it trust this side's certificate?)",
            ));
        }
        session.receive(&chunk[..n], &mut plain)?;
    }
}

/// The name a client expects in the server's certificate: `name` if given (a DNS name or an IP
/// address), else the address connected to.
pub fn server_name(name: Option<&str>, address: IpAddr) -> Result<ServerName<'static>, NetError> {
    match name {
        Some(name) => ServerName::try_from(name.to_owned()).map_err(|_| {
            NetError::Tls(format!(
                "`{name}` is not a DNS name or IP address to expect in the registrar's certificate"
            ))
        }),
        None => Ok(ServerName::IpAddress(address.into())),
    }
}

/// One TLS session over one stream, either side: bytes received go in through
/// [`Self::receive`], plaintext to send through [`Self::seal`], and the bytes to write on the
/// socket come out of [`Self::take_outgoing`].
#[derive(Debug)]
pub struct TlsSession {
    conn: rustls::Connection,
}

impl TlsSession {
    /// Takes `bytes` received from the peer and appends the plaintext they complete to
    /// `plain`. Returns whether the peer closed the session (`close_notify`). An error is a
    /// broken or refused session (a bad record, a certificate the CA bundle does not vouch
    /// for): the alert to tell the peer waits in [`Self::take_outgoing`], then close.
    pub fn receive(&mut self, mut bytes: &[u8], plain: &mut Vec<u8>) -> io::Result<bool> {
        let mut closed = false;
        while !bytes.is_empty() {
            self.conn.read_tls(&mut bytes)?;
            let state = self
                .conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if state.plaintext_bytes_to_read() > 0 {
                let start = plain.len();
                plain.resize(start + state.plaintext_bytes_to_read(), 0);
                self.conn.reader().read_exact(&mut plain[start..])?;
            }
            closed |= state.peer_has_closed();
        }
        Ok(closed)
    }

    /// Encrypts `plain` for the peer (held until the handshake completes); the records come out
    /// of [`Self::take_outgoing`]. One call makes records of up to 16 KiB: batch replies.
    pub fn seal(&mut self, plain: &[u8]) -> io::Result<()> {
        io::Write::write_all(&mut self.conn.writer(), plain)
    }

    /// Appends what waits to be written to the socket (handshake, records, alerts) to `out`.
    pub fn take_outgoing(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            if self.conn.write_tls(out).is_err() {
                break;
            }
        }
    }

    /// Whether bytes wait for [`Self::take_outgoing`].
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Sends `close_notify` (through [`Self::take_outgoing`]).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// The names of the peer's verified certificate, once the handshake is done: the
    /// subject's common names, then its subject alternative names (DNS names, URIs, e-mail
    /// addresses, IP addresses). `None` when the peer presented none (a server that does not ask
    /// for one, or a client where it is optional).
    pub fn peer_names(&self) -> Option<Vec<String>> {
        let leaf = self.conn.peer_certificates()?.first()?;
        Some(certificate_names(leaf))
    }
}

/// The names a DER certificate gives its subject; none when it cannot be parsed (rustls verified
/// it, so it can).
fn certificate_names(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let mut names = Vec::new();
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return names;
    };
    for cn in cert.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str() {
            names.push(cn.to_owned());
        }
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                    names.push((*s).to_owned());
                }
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    names.dedup();
    names
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A test CA in a temporary directory of its own.
    pub(crate) fn pki(tag: &str) -> crate::test_pki::TestPki {
        let dir = std::env::temp_dir().join(format!("rserpool-tls-{tag}-{}", std::process::id()));
        crate::test_pki::TestPki::new(&dir, &format!("test CA {tag}")).unwrap()
    }

    /// Runs a handshake between two sessions in memory; the plaintext the server got meanwhile
    /// (what the client sealed before the handshake ended).
    fn handshake(client: &mut TlsSession, server: &mut TlsSession) -> io::Result<Vec<u8>> {
        let mut plain = Vec::new();
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.take_outgoing(&mut wire);
            server.receive(&wire, &mut plain)?;
            wire.clear();
            server.take_outgoing(&mut wire);
            client.receive(&wire, &mut Vec::new())?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(plain);
            }
        }
        panic!("no handshake in 10 round trips");
    }

    fn localhost() -> ServerName<'static> {
        server_name(None, "127.0.0.1".parse().unwrap()).unwrap()
    }

    #[test]
    fn mutual_tls_carries_bytes_both_ways_and_names_the_client() {
        let pki = pki("mutual");
        let server = ServerTls::load(
            &pki.issue("registrar", &["127.0.0.1", "pr.example.net"], "registrar")
                .unwrap(),
        )
        .unwrap();
        assert!(server.verifies_clients());
        let client =
            ClientTls::load(&pki.issue("pe-7", &["pe7.example.net"], "pe-7").unwrap()).unwrap();
        let mut s = server.accept(ClientCertificate::Required).unwrap();
        let mut c = client.connect(localhost()).unwrap();
        // Sealed before the handshake: held until it completes.
        c.seal(b"early").unwrap();
        let mut plain = handshake(&mut c, &mut s).unwrap();
        assert_eq!(s.peer_names().unwrap(), ["pe-7", "pe7.example.net"]);
        assert_eq!(
            c.peer_names().unwrap(),
            ["registrar", "127.0.0.1", "pr.example.net"]
        );

        let mut wire = Vec::new();
        c.seal(b" and late").unwrap();
        c.take_outgoing(&mut wire);
        // Cut anywhere, the records still decrypt.
        for chunk in wire.chunks(5) {
            assert!(!s.receive(chunk, &mut plain).unwrap());
        }
        assert_eq!(plain, b"early and late");
        s.seal(&[7; 40_000]).unwrap();
        wire.clear();
        s.take_outgoing(&mut wire);
        plain.clear();
        c.receive(&wire, &mut plain).unwrap();
        assert_eq!(plain, [7; 40_000]);
        c.close();
        wire.clear();
        c.take_outgoing(&mut wire);
        assert!(s.receive(&wire, &mut plain).unwrap(), "close_notify seen");
    }

    #[test]
    fn a_client_without_a_certificate_is_refused_where_one_is_required() {
        let pki = pki("required");
        let server =
            ServerTls::load(&pki.issue("registrar", &["127.0.0.1"], "registrar").unwrap()).unwrap();
        let anonymous = ClientTls::load(&TlsFiles {
            ca: pki.ca_file(),
            ..TlsFiles::default()
        })
        .unwrap();
        let mut s = server.accept(ClientCertificate::Required).unwrap();
        let mut c = anonymous.connect(localhost()).unwrap();
        let e = handshake(&mut c, &mut s).unwrap_err();
        assert!(e.to_string().contains("certificate"), "{e}");
        // Where a certificate is optional, the same client gets in without an identity.
        let mut s = server.accept(ClientCertificate::Optional).unwrap();
        let mut c = anonymous.connect(localhost()).unwrap();
        handshake(&mut c, &mut s).unwrap();
        assert_eq!(s.peer_names(), None);
    }

    #[test]
    fn a_certificate_of_another_ca_is_refused_both_ways() {
        let (ours, theirs) = (pki("ours"), pki("theirs"));
        let server = ServerTls::load(
            &ours
                .issue("registrar", &["127.0.0.1"], "registrar")
                .unwrap(),
        )
        .unwrap();
        let mut stranger = theirs.issue("pe-1", &[], "pe-1").unwrap();
        stranger.ca = ours.ca_file();
        let client = ClientTls::load(&stranger).unwrap();
        let mut s = server.accept(ClientCertificate::Required).unwrap();
        let mut c = client.connect(localhost()).unwrap();
        assert!(handshake(&mut c, &mut s).is_err(), "client of another CA");

        let mut trusting_theirs = ours.issue("pe-2", &[], "pe-2").unwrap();
        trusting_theirs.ca = theirs.ca_file();
        let client = ClientTls::load(&trusting_theirs).unwrap();
        let mut s = server.accept(ClientCertificate::None).unwrap();
        let mut c = client.connect(localhost()).unwrap();
        let e = handshake(&mut c, &mut s).unwrap_err();
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
        // A server whose certificate does not name the address connected to.
        let mut s = server.accept(ClientCertificate::None).unwrap();
        let mut c = ClientTls::load(&ours.issue("pe-3", &[], "pe-3").unwrap())
            .unwrap()
            .connect(server_name(None, "127.0.0.2".parse().unwrap()).unwrap())
            .unwrap();
        let e = handshake(&mut c, &mut s).unwrap_err();
        assert!(e.to_string().contains("not valid for name"), "{e}");
    }

    #[test]
    fn unusable_files_are_named_with_what_to_do() {
        let pki = pki("files");
        let mut files = pki.issue("registrar", &[], "registrar").unwrap();
        files.private_key = std::env::temp_dir().join("rserpool-missing.key");
        let e = ServerTls::load(&files).unwrap_err().to_string();
        assert!(
            e.contains("missing.key") && e.contains("private key"),
            "{e}"
        );
        let mut files = pki.issue("registrar", &[], "registrar").unwrap();
        files.private_key = pki.issue("other", &[], "other").unwrap().private_key;
        let e = ServerTls::load(&files).unwrap_err().to_string();
        assert!(e.contains("must belong to"), "{e}");
        let mut files = pki.issue("registrar", &[], "registrar").unwrap();
        files.certificate = files.private_key.clone();
        let e = ServerTls::load(&files).unwrap_err().to_string();
        assert!(e.contains("no certificate in"), "{e}");
        let e = ClientTls::load(&TlsFiles::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("CA bundle"), "{e}");
        let server = ServerTls::load(&TlsFiles {
            ca: PathBuf::new(),
            ..pki.issue("registrar", &[], "registrar").unwrap()
        })
        .unwrap();
        assert!(!server.verifies_clients());
        assert!(server.accept(ClientCertificate::Required).is_none());
        assert!(server.accept(ClientCertificate::None).is_some());
    }
}
