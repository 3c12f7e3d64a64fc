//! A pool element serving a counter whose state survives its own death: each request (an 8-byte
//! big-endian increment, PPID 0x43544e31 "CTN1") adds to the session's running total; the PE
//! sends the total as an ASAP_COOKIE signed with HMAC-SHA256 under a shared key, then the
//! total as the reply. When the PE dies, the PU fails over and echoes the latest cookie to
//! another counter PE (RFC 5352 §3.8), which checks the signature and goes on from that total.
//! At session start the PE sends a business card naming the pool's other PEs (RFC 5352 §3.9).
//!
//! ```sh
//! cargo run -p rserpool-registrar -- --profile default &
//! cargo run -p rserpool-endpoint --example counter_pe -- --registrar tcp://127.0.0.1:3863 &
//! cargo run -p rserpool-endpoint --example counter_pe -- --registrar tcp://127.0.0.1:3863 &
//! cargo run -p rserpool-endpoint --example counter_pu -- --registrar tcp://127.0.0.1:3863
//! ```
//!
//! Over kernel SCTP (the control channel is PPID 11 on the PU's association): `--listen
//! sctp://127.0.0.1:0` here and `--transport sctp` for the PU. Over TLS with mutual
//! authentication: `--listen tcp+tls://127.0.0.1:0 --tls-certificate pe.pem --tls-key pe.key
//! --tls-ca ca.pem` here, `--tls-ca ca.pem --tls-certificate pu.pem --tls-key pu.key` for the PU.
//!
//! It prints `pe <id> port <port>` once registered, `restored <total>` for each accepted cookie
//! echo, `total <total>` for each request.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use ring::hmac;
use rserpool_endpoint::driver::session::{
    CloseReason, PeerSession, SessionHandler, SessionOptions, SessionTls, transport_kind,
};
use rserpool_endpoint::driver::{Pe, Pu, SessionServer};
use rserpool_endpoint::session::{PeSessionConfig, SessionError};
use rserpool_endpoint::{PeInfo, RegistrarUrl, pe, pu};
use rserpool_net::{ClientCertificate, ServerTls, TlsFiles, Transport, TransportUrl};
use rserpool_protocol::{PeId, TRANSPORT_USE_DATA_PLUS_CONTROL};

/// The counter's application PPID ("CTN1").
pub const COUNTER_PPID: u32 = 0x4354_4e31;

/// A counter pool element.
#[derive(Parser, Debug, Clone)]
pub struct Args {
    /// The registrar, e.g. tcp://127.0.0.1:3863.
    #[arg(long)]
    pub registrar: String,
    /// The pool to join.
    #[arg(long, default_value = "counter")]
    pub pool: String,
    /// Where PUs connect: sctp://, tcp://, mptcp://, tcp+tls:// or mptcp+tls:// and an
    /// address, or an address alone for TCP (port 0: any free port).
    #[arg(long, default_value = "tcp://127.0.0.1:0", value_parser = parse_listen)]
    pub listen: TransportUrl,
    /// TLS: the PE's certificate chain (PEM).
    #[arg(long)]
    pub tls_certificate: Option<PathBuf>,
    /// TLS: the PE's private key (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// TLS: the CA bundle (PEM) that vouches for the PUs' certificates.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// The secret the pool's PEs sign cookies with (use a real secret in production).
    #[arg(long, default_value = "rserpool counter example")]
    pub key: String,
}

/// The signing key from the shared secret's text: HMAC-SHA256 keyed with its bytes.
pub fn derive_key(secret: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
}

/// The cookie of a total: "CNT1", the total (8 bytes, big-endian), the HMAC-SHA256 over both
/// (32 bytes).
pub fn cookie(key: &hmac::Key, total: u64) -> Vec<u8> {
    let mut c = b"CNT1".to_vec();
    c.extend_from_slice(&total.to_be_bytes());
    let tag = hmac::sign(key, &c);
    c.extend_from_slice(tag.as_ref());
    c
}

/// The total of a cookie whose signature checks out (compared in constant time).
pub fn open_cookie(key: &hmac::Key, cookie: &[u8]) -> Option<u64> {
    let (body, tag) = cookie.split_at_checked(12)?;
    let total: [u8; 8] = body.strip_prefix(b"CNT1")?.try_into().ok()?;
    hmac::verify(key, body, tag).ok()?;
    Some(u64::from_be_bytes(total))
}

/// A session listener: a transport URL, or an address alone for TCP.
fn parse_listen(text: &str) -> Result<TransportUrl, String> {
    if let Ok(address) = text.parse() {
        return Ok(TransportUrl::new(Transport::Tcp, address));
    }
    let url = TransportUrl::parse(text, &[Transport::Sctp, Transport::Tcp, Transport::Mptcp])
        .map_err(|e| e.to_string())?;
    if url
        .tls
        .is_some_and(|asks| asks != ClientCertificate::Required)
    {
        return Err("session PEs authenticate every PU: drop the client-certificate option".into());
    }
    Ok(url)
}

/// The PE's side of TLS when `--listen` names it: all three `--tls-*` files.
fn session_tls(args: &Args) -> Result<Option<SessionTls>, String> {
    if args.listen.tls.is_none() {
        return Ok(None);
    }
    let (Some(certificate), Some(private_key), Some(ca)) =
        (&args.tls_certificate, &args.tls_key, &args.tls_ca)
    else {
        return Err(format!(
            "--listen {} needs --tls-certificate, --tls-key and --tls-ca",
            args.listen
        ));
    };
    let files = TlsFiles {
        certificate: certificate.clone(),
        private_key: private_key.clone(),
        ca: ca.clone(),
    };
    let server = ServerTls::load(&files).map_err(|e| e.to_string())?;
    Ok(Some(SessionTls::Pe(server)))
}

/// One session's counter.
struct Counter {
    total: u64,
    key: hmac::Key,
    me: PeId,
    registrar: RegistrarUrl,
    pool: String,
}

impl SessionHandler for Counter {
    /// The pool's other PEs, as the registrar lists them now (RFC 5352 §3.9).
    fn business_card(&mut self) -> Vec<PeInfo> {
        let mut config = pu::Config::new(vec![self.registrar.registrar]);
        config.generation = self.registrar.generation;
        match Pu::new(config).resolve_items(&self.pool, Some(u32::MAX)) {
            Ok(pes) => pes.into_iter().filter(|p| p.id != self.me).collect(),
            Err(e) => {
                eprintln!("counter_pe: no business card: {e}");
                Vec::new()
            }
        }
    }

    fn on_cookie_echo(&mut self, _session: &mut PeerSession<'_>, cookie: &[u8]) {
        match open_cookie(&self.key, cookie) {
            Some(total) => {
                self.total = total;
                say(&format!("restored {total}"));
            }
            None => eprintln!("counter_pe: a cookie echo with a bad signature was ignored"),
        }
    }

    fn on_data(&mut self, session: &mut PeerSession<'_>, ppid: u32, payload: &[u8]) {
        let Ok(increment) = <[u8; 8]>::try_from(payload) else {
            eprintln!(
                "counter_pe: a request of {} bytes was ignored",
                payload.len()
            );
            return;
        };
        if ppid != COUNTER_PPID {
            eprintln!("counter_pe: a message with PPID {ppid} was ignored");
            return;
        }
        self.total = self.total.wrapping_add(u64::from_be_bytes(increment));
        // The cookie before the reply: a PU that has the reply has the cookie of that total.
        let sent = session
            .send_cookie(&cookie(&self.key, self.total))
            .and_then(|()| session.send_data(COUNTER_PPID, &self.total.to_be_bytes()));
        match sent {
            Ok(()) => say(&format!("total {}", self.total)),
            Err(e) => eprintln!("counter_pe: {e}"),
        }
    }

    fn on_error(&mut self, error: &SessionError) {
        eprintln!("counter_pe: {error}");
    }

    fn on_closed(&mut self, reason: &CloseReason) {
        if matches!(
            reason,
            CloseReason::Idle(_) | CloseReason::TooManySessions { .. }
        ) {
            eprintln!("counter_pe: session closed: {reason}");
        }
    }
}

/// Prints a line on stdout at once (tests read it through a pipe).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Registers the PE and serves sessions until killed.
pub fn run(args: &Args) -> Result<(), String> {
    let registrar: RegistrarUrl = args
        .registrar
        .parse()
        .map_err(|e| format!("--registrar {}: {e}", args.registrar))?;
    let server = SessionServer::bind(
        args.listen.address,
        PeSessionConfig {
            generation: registrar.generation,
            ..PeSessionConfig::new(args.pool.as_bytes())
        },
        SessionOptions {
            transport: args.listen.transport,
            tls: session_tls(args)?,
            ..SessionOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let port = server.local_addr().map_err(|e| e.to_string())?.port();
    let mut config = pe::Config::new(vec![registrar.registrar], args.pool.as_bytes());
    config.generation = registrar.generation;
    config.transport.kind = transport_kind(args.listen.transport);
    config.transport.port = port;
    config.transport.transport_use = TRANSPORT_USE_DATA_PLUS_CONTROL;
    let handle = Pe::register(config).map_err(|e| e.to_string())?;
    let me = handle.pe_id();
    say(&format!("pe {} port {port}", me.0));
    let key = derive_key(&args.key);
    let pool = args.pool.clone();
    let result = server.run(move |_peer| Counter {
        total: 0,
        key: key.clone(),
        me,
        registrar,
        pool: pool.clone(),
    });
    drop(handle);
    result.map_err(|e| e.to_string())
}

#[allow(dead_code)] // The end-to-end test includes this file as a module and calls `run`.
fn main() {
    if let Err(e) = run(&Args::parse()) {
        eprintln!("counter_pe: {e}");
        std::process::exit(1);
    }
}
