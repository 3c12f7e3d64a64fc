//! A pool user of the counter pool (see `counter_pe.rs`): opens a session through a registrar,
//! sends `--count` increments and prints each total. When its PE dies the session fails over
//! with the cookie echo (RFC 5352 §3.8) and the totals go on from the cookie; the request that
//! was under way is sent again.
//!
//! ```sh
//! cargo run -p rserpool-endpoint --example counter_pu -- --registrar tcp://127.0.0.1:3863 \
//!     --count 100 --interval-ms 500
//! ```
//!
//! `--transport sctp` reaches PEs listening on kernel SCTP (`counter_pe --listen sctp://...`).
//! `--tls-ca ca.pem --tls-certificate pu.pem --tls-key pu.key` reaches PEs listening on
//! `tcp+tls://` (the PE's certificate must name its IP address).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rserpool_endpoint::RegistrarUrl;
use rserpool_endpoint::driver::session::{Received, SessionOptions, SessionTls};
use rserpool_endpoint::driver::{Pu, Session, TlsOptions};
use rserpool_endpoint::pu;
use rserpool_endpoint::session::{PuSessionConfig, SessionError};
use rserpool_net::{ClientTls, TlsFiles, Transport};

/// The counter's application PPID ("CTN1").
const COUNTER_PPID: u32 = 0x4354_4e31;

/// A counter pool user.
#[derive(Parser, Debug)]
struct Args {
    /// The registrar, e.g. tcp://127.0.0.1:3863.
    #[arg(long)]
    registrar: String,
    /// The pool.
    #[arg(long, default_value = "counter")]
    pool: String,
    /// Increments to send.
    #[arg(long, default_value_t = 10)]
    count: u64,
    /// The increment.
    #[arg(long, default_value_t = 1)]
    step: u64,
    /// Pause between requests.
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
    /// The transport to the PEs: sctp, tcp or mptcp.
    #[arg(long, default_value = "tcp", value_parser = parse_transport)]
    transport: Transport,
    /// TLS to the PEs: the CA bundle (PEM) that vouches for their certificates.
    #[arg(long, requires_all = ["tls_certificate", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// TLS: the PU's certificate chain (PEM); the PEs require one.
    #[arg(long, requires = "tls_ca")]
    tls_certificate: Option<PathBuf>,
    /// TLS: the PU's private key (PEM).
    #[arg(long, requires = "tls_ca")]
    tls_key: Option<PathBuf>,
}

/// The PU's side of TLS when `--tls-ca` is given.
fn session_tls(args: &Args) -> Result<Option<SessionTls>, String> {
    let Some(ca) = &args.tls_ca else {
        return Ok(None);
    };
    let files = TlsFiles {
        certificate: args.tls_certificate.clone().unwrap_or_default(),
        private_key: args.tls_key.clone().unwrap_or_default(),
        ca: ca.clone(),
    };
    let client = ClientTls::load(&files).map_err(|e| e.to_string())?;
    Ok(Some(SessionTls::Pu(TlsOptions {
        client,
        server_name: None,
    })))
}

/// A session transport by its URL scheme.
fn parse_transport(text: &str) -> Result<Transport, String> {
    [Transport::Sctp, Transport::Tcp, Transport::Mptcp]
        .into_iter()
        .find(|t| t.scheme() == text)
        .ok_or_else(|| format!("`{text}`: expected sctp, tcp or mptcp"))
}

/// Sends one increment and waits for the total, sending it again after a failover.
fn add(session: &mut Session, step: u64) -> Result<u64, SessionError> {
    session.send(COUNTER_PPID, &step.to_be_bytes())?;
    loop {
        match session.recv(Duration::from_secs(10))? {
            Some(Received::Data { ppid, payload }) if ppid == COUNTER_PPID => {
                if let Ok(total) = <[u8; 8]>::try_from(payload.as_slice()) {
                    return Ok(u64::from_be_bytes(total));
                }
            }
            Some(Received::Data { .. }) => {}
            Some(Received::FailedOver { from, to }) => {
                println!("PE {} failed, now PE {} (cookie echoed)", from.id, to.id);
                session.send(COUNTER_PPID, &step.to_be_bytes())?;
            }
            None => {
                return Err(SessionError::Io {
                    what: "wait for the total".into(),
                    error: "no answer within 10 s".into(),
                });
            }
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let registrar: RegistrarUrl = args
        .registrar
        .parse()
        .map_err(|e| format!("--registrar {}: {e}", args.registrar))?;
    let mut config = pu::Config::new(vec![registrar.registrar]);
    config.generation = registrar.generation;
    let session_config = PuSessionConfig {
        generation: registrar.generation,
        ..PuSessionConfig::new(args.pool.as_bytes())
    };
    let options = SessionOptions {
        transport: args.transport,
        tls: session_tls(args)?,
        ..SessionOptions::default()
    };
    let mut session =
        Session::open(Pu::new(config), session_config, options).map_err(|e| e.to_string())?;
    for _ in 0..args.count {
        let total = add(&mut session, args.step).map_err(|e| e.to_string())?;
        match session.current_pe() {
            Some(pe) => println!("total {total} from PE {}", pe.id),
            None => println!("total {total}"),
        }
        std::thread::sleep(Duration::from_millis(args.interval_ms));
    }
    Ok(())
}

fn main() {
    if let Err(e) = run(&Args::parse()) {
        eprintln!("counter_pu: {e}");
        std::process::exit(1);
    }
}
