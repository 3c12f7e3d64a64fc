//! How `rserpool` reaches registrars: the registrar URLs it takes (streams, and `udp://` for
//! stateless resolution), the flags that name registrars, discovery and TLS, and their merge
//! with `$RSERPOOL_REGISTRAR` and the configuration file (command line > environment > file)
//! into a checked [`Reach`]. Nothing here opens a socket.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;
use rserpool_endpoint::driver::{Options, TlsOptions};
use rserpool_endpoint::{Registrar, RegistrarUrl, StreamTransport};
use rserpool_net::{ClientTls, TlsFiles, Transport, TransportUrl};
use rserpool_protocol::Generation;

use crate::config::{FileConfig, MAX_DISCOVER_TIMEOUT_MS, Origin, Setting};

/// The environment variable that names registrars when `--registrar` does not.
pub const REGISTRAR_ENV: &str = "RSERPOOL_REGISTRAR";
/// RSPLIB's ASAP announce group (`ASAP_ANNOUNCE_MULTICAST_ADDRESS`), where registrars announce
/// themselves by default.
pub const DEFAULT_DISCOVER: &str = "udp://239.0.0.50:3863";
/// How long to listen for announces by default: T7, the life of an announced registrar (RFC 5352
/// §5), five of RSPLIB's one-second announce intervals.
pub const DEFAULT_DISCOVER_TIMEOUT_MS: u64 = 5_000;

/// A registrar as the command line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// An SCTP, TCP or MPTCP registrar (optionally TLS): every subcommand.
    Stream(RegistrarUrl),
    /// A registrar's UDP listener: stateless handle resolution only.
    Udp {
        /// Its address.
        address: SocketAddr,
        /// The wire generation spoken there.
        generation: Generation,
    },
}

impl Target {
    /// The wire generation.
    pub const fn generation(&self) -> Generation {
        match self {
            Self::Stream(url) => url.generation,
            Self::Udp { generation, .. } => *generation,
        }
    }
}

impl FromStr for Target {
    type Err = rserpool_net::UrlError;

    /// Parses a URL of any of the schemes sctp, tcp, mptcp (with +tls for TLS), udp and
    /// sctp+udp.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = TransportUrl::parse(s, Transport::ALL)?;
        let transport = match url.transport {
            Transport::Udp => {
                return Ok(Self::Udp {
                    address: url.address,
                    generation: url.generation,
                });
            }
            Transport::Tcp => StreamTransport::Tcp,
            Transport::Mptcp => StreamTransport::Mptcp,
            Transport::Sctp => StreamTransport::Sctp,
            Transport::SctpUdp => StreamTransport::SctpUdp,
        };
        Ok(Self::Stream(RegistrarUrl {
            registrar: Registrar {
                transport,
                address: url.address,
                tls: url.tls.is_some(),
            },
            generation: url.generation,
        }))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stream(url) => url.fmt(f),
            Self::Udp {
                address,
                generation,
            } => TransportUrl::new(Transport::Udp, *address)
                .with_generation(*generation)
                .fmt(f),
        }
    }
}

/// Parses where to listen for announces: a `udp://` URL with a port.
pub fn discovery_url(text: &str) -> Result<TransportUrl, String> {
    let url = TransportUrl::parse(text, &[Transport::Udp]).map_err(|e| e.to_string())?;
    if url.address.port() == 0 {
        return Err(format!(
            "`{text}` has port 0; announces arrive at a known port (RSPLIB and the registrar's \
             examples use 3863)"
        ));
    }
    Ok(url)
}

/// The flags that say which registrars to use and how; flattened into `register`, `resolve`
/// and `watch`.
#[derive(Debug, Args)]
pub struct ReachArgs {
    /// A registrar, e.g. sctp://127.0.0.1:3863, tcp://127.0.0.1:3863, sctp+udp://127.0.0.1:9899
    /// (SCTP over UDP, RFC 6951), (TLS)
    /// tcp+tls://127.0.0.1:3864 or (resolve and watch only) udp://127.0.0.1:3863; repeat (or
    /// separate with commas) for failover, all of one generation. Without it: $RSERPOOL_REGISTRAR,
    /// then `registrar` in the configuration file, then discovery (--discover).
    #[arg(long = "registrar", value_name = "URL", value_delimiter = ',')]
    registrars: Vec<Target>,
    /// Find the registrar by listening for its announces (ASAP_SERVER_ANNOUNCE) at this udp://
    /// multicast group or local address, as when no registrar is given at all [default:
    /// `discover` in the configuration file, else udp://239.0.0.50:3863]. Add ?generation=ng for
    /// NG announces.
    #[arg(long, value_name = "URL", value_parser = discovery_url, conflicts_with = "registrars")]
    discover: Option<TransportUrl>,
    /// How long to listen for announces, in milliseconds [default: `discover_timeout_ms` in the
    /// configuration file, else 5000].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=MAX_DISCOVER_TIMEOUT_MS))]
    discover_timeout: Option<u64>,
    /// The CA bundle (PEM) that vouches for tcp+tls:// and mptcp+tls:// registrars.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The certificate chain (PEM) to present to TLS registrars (a PE needs one where the
    /// registrar requires client certificates); with --tls-key.
    #[arg(long, value_name = "FILE")]
    tls_certificate: Option<PathBuf>,
    /// The private key (PEM) of --tls-certificate.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// The name the registrar's certificate must have (default: the address connected to).
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
}

/// Where a setting came from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    /// A flag, e.g. `--tls-ca`.
    Flag(&'static str),
    /// The environment variable [`REGISTRAR_ENV`].
    Env,
    /// A key of the configuration file.
    File(&'static str, Origin),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag(flag) => f.write_str(flag),
            Self::Env => write!(f, "${REGISTRAR_ENV}"),
            Self::File(key, origin) => write!(f, "`{key}` at {origin}"),
        }
    }
}

/// The registrars to use, as far as they are known before anything is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registrars {
    /// SCTP, TCP or MPTCP registrars, in failover order.
    Streams(Vec<Registrar>),
    /// UDP listeners, in failover order.
    Udp(Vec<SocketAddr>),
    /// None given: listen for announces first.
    Discover(Discovery),
}

/// How to discover registrars.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// Where announces arrive.
    pub listen: TransportUrl,
    /// How long to listen, in milliseconds.
    pub timeout_ms: u64,
    /// Asked for with `--discover`; otherwise nothing named a registrar.
    pub asked: bool,
    /// The configuration file that could have named one, for the error.
    pub config_file: Option<PathBuf>,
}

/// The checked settings: registrars (or how to discover them), their generation, and the
/// driver options with TLS.
#[derive(Debug)]
pub struct Reach {
    /// The registrars.
    pub registrars: Registrars,
    /// The wire generation of every registrar.
    pub generation: Generation,
    /// The driver options (TLS loaded).
    pub options: Options,
}

impl ReachArgs {
    /// Merges the flags, `$RSERPOOL_REGISTRAR` and the file, checks them and loads the TLS
    /// files; a problem is a usage error.
    pub fn reach(&self, file: &FileConfig) -> Result<Reach, String> {
        let (registrars, generation) = self.registrars(file)?;
        let options = self.options(file, &registrars)?;
        Ok(Reach {
            registrars,
            generation,
            options,
        })
    }

    /// The registrars by precedence, all of one generation and one kind.
    fn registrars(&self, file: &FileConfig) -> Result<(Registrars, Generation), String> {
        let given = if !self.registrars.is_empty() {
            Some((self.registrars.clone(), Source::Flag("--registrar")))
        } else if self.discover.is_some() {
            None
        } else if let Some(targets) = from_env()? {
            Some((targets, Source::Env))
        } else {
            file.registrars.as_ref().map(|Setting { value, origin }| {
                (value.clone(), Source::File("registrar", origin.clone()))
            })
        };
        let Some((targets, source)) = given else {
            let listen = match (&self.discover, &file.discover) {
                (Some(url), _) => *url,
                (None, Some(setting)) => setting.value,
                (None, None) => discovery_url(DEFAULT_DISCOVER)?,
            };
            let timeout_ms = self
                .discover_timeout
                .or(file.discover_timeout_ms.as_ref().map(|s| s.value))
                .unwrap_or(DEFAULT_DISCOVER_TIMEOUT_MS);
            let discovery = Discovery {
                listen,
                timeout_ms,
                asked: self.discover.is_some(),
                config_file: file.path.clone(),
            };
            return Ok((Registrars::Discover(discovery), listen.generation));
        };
        let generation = targets[0].generation();
        if targets.iter().any(|t| t.generation() != generation) {
            return Err(format!(
                "the registrars of {source} mix wire generations ({}): all must use the same \
                 (?generation=ng on each NG registrar, none on RFC ones)",
                list(&targets)
            ));
        }
        let udp: Vec<SocketAddr> = targets
            .iter()
            .filter_map(|t| match t {
                Target::Udp { address, .. } => Some(*address),
                Target::Stream(_) => None,
            })
            .collect();
        if udp.is_empty() {
            let streams = targets
                .iter()
                .filter_map(|t| match t {
                    Target::Stream(url) => Some(url.registrar),
                    Target::Udp { .. } => None,
                })
                .collect();
            return Ok((Registrars::Streams(streams), generation));
        }
        if udp.len() != targets.len() {
            return Err(format!(
                "the registrars of {source} mix udp:// with connections ({}): udp:// answers \
                 handle resolutions without a connection and cannot take over from one; give \
                 udp:// registrars only, or none",
                list(&targets)
            ));
        }
        Ok((Registrars::Udp(udp), generation))
    }

    /// The driver options: TLS from the flags and the file, checked and loaded.
    fn options(&self, file: &FileConfig, registrars: &Registrars) -> Result<Options, String> {
        let flag = |path: &Option<PathBuf>, name| path.clone().map(|p| (p, Source::Flag(name)));
        let key = |setting: &Option<Setting<PathBuf>>, key| {
            setting
                .as_ref()
                .map(|s| (s.value.clone(), Source::File(key, s.origin.clone())))
        };
        let ca = flag(&self.tls_ca, "--tls-ca").or_else(|| key(&file.tls_ca, "tls.ca"));
        // The certificate and its key are a pair: both from the flags, or both from the file.
        let (certificate, private_key) = if self.tls_certificate.is_some() || self.tls_key.is_some()
        {
            (
                flag(&self.tls_certificate, "--tls-certificate"),
                flag(&self.tls_key, "--tls-key"),
            )
        } else {
            (
                key(&file.tls_certificate, "tls.certificate"),
                key(&file.tls_key, "tls.key"),
            )
        };
        let server_name = match (&self.tls_server_name, &file.tls_server_name) {
            (Some(name), _) => Some((name.clone(), Source::Flag("--tls-server-name"))),
            (None, Some(s)) => Some((
                s.value.clone(),
                Source::File("tls.server_name", s.origin.clone()),
            )),
            (None, None) => None,
        };
        match (&certificate, &private_key) {
            (Some((_, source)), None) => {
                return Err(format!(
                    "the client certificate of {source} needs its private key: {}",
                    match source {
                        Source::File(..) => "set `key` beside it in [tls]",
                        _ => "give --tls-key FILE with it",
                    }
                ));
            }
            (None, Some((_, source))) => {
                return Err(format!(
                    "the private key of {source} needs its certificate: {}",
                    match source {
                        Source::File(..) => "set `certificate` beside it in [tls]",
                        _ => "give --tls-certificate FILE with it",
                    }
                ));
            }
            _ => {}
        }
        let Some((ca_path, _)) = &ca else {
            if let Some((_, source)) = certificate.as_ref().or(private_key.as_ref()) {
                return Err(format!(
                    "the client certificate of {source} is for TLS registrars, which need the CA \
                     bundle that vouches for them: give --tls-ca FILE (or `ca` in [tls] of the \
                     configuration file)"
                ));
            }
            if let Some((_, source)) = &server_name {
                return Err(format!(
                    "{source} names the TLS registrar's certificate, and TLS needs the CA bundle \
                     that vouches for it: give --tls-ca FILE (or `ca` in [tls] of the \
                     configuration file)"
                ));
            }
            if let Registrars::Streams(streams) = registrars
                && let Some(r) = streams.iter().find(|r| r.tls)
            {
                return Err(format!(
                    "{r} speaks TLS: give the CA bundle that vouches for it with --tls-ca FILE \
                     (or `ca` in [tls] of the configuration file; and --tls-certificate and \
                     --tls-key where it asks for a client certificate)"
                ));
            }
            return Ok(Options::default());
        };
        for (path, source) in [&ca, &certificate, &private_key].into_iter().flatten() {
            if let Err(e) = std::fs::metadata(path) {
                return Err(format!(
                    "cannot read {} (from {source}): {e}; check the path",
                    path.display()
                ));
            }
        }
        let files = TlsFiles {
            certificate: certificate.map(|(p, _)| p).unwrap_or_default(),
            private_key: private_key.map(|(p, _)| p).unwrap_or_default(),
            ca: ca_path.clone(),
        };
        let client = ClientTls::load(&files).map_err(|e| e.to_string())?;
        Ok(Options {
            tls: Some(TlsOptions {
                client,
                server_name: server_name.map(|(name, _)| name),
            }),
            ..Options::default()
        })
    }
}

/// The registrars of [`REGISTRAR_ENV`] (comma-separated URLs); `None` when it is unset or empty.
fn from_env() -> Result<Option<Vec<Target>>, String> {
    match std::env::var(REGISTRAR_ENV) {
        Ok(text) if !text.trim().is_empty() => text
            .split(',')
            .map(|one| one.trim().parse::<Target>())
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|e| format!("${REGISTRAR_ENV}: {e}")),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("${REGISTRAR_ENV} is not valid UTF-8"))
        }
    }
}

/// The targets as a comma-separated list.
fn list(targets: &[Target]) -> String {
    let texts: Vec<String> = targets.iter().map(ToString::to_string).collect();
    texts.join(", ")
}
