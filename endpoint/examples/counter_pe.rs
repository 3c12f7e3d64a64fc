//! A pool element serving a counter whose state survives its own death: each request (an 8-byte
//! big-endian increment, PPID 0x43544e31 "CTN1") adds to the session's running total; the PE
//! sends the total as an ASAP_COOKIE signed with SipHash-2-4 under a shared key, then the
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
//! It prints `pe <id> port <port>` once registered, `restored <total>` for each accepted cookie
//! echo, `total <total>` for each request.

use std::io::Write;
use std::net::SocketAddr;

use clap::Parser;
use rserpool_endpoint::driver::session::{PeerSession, SessionHandler, SessionOptions};
use rserpool_endpoint::driver::{Pe, Pu, SessionServer};
use rserpool_endpoint::session::{PeSessionConfig, SessionError};
use rserpool_endpoint::{PeInfo, RegistrarUrl, pe, pu};
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
    /// Where PUs connect (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The secret the pool's PEs sign cookies with (use a real secret in production).
    #[arg(long, default_value = "rserpool counter example")]
    pub key: String,
}

/// SipHash-2-4 of `data` under `key` (Aumasson and Bernstein): a keyed MAC for short inputs.
pub fn siphash24(key: [u8; 16], data: &[u8]) -> u64 {
    let [
        a0,
        a1,
        a2,
        a3,
        a4,
        a5,
        a6,
        a7,
        b0,
        b1,
        b2,
        b3,
        b4,
        b5,
        b6,
        b7,
    ] = key;
    let k0 = u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]);
    let k1 = u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut compress = |m: u64| {
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    };
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        compress(u64::from_le_bytes(word));
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    last[7] = data.len() as u8;
    compress(u64::from_le_bytes(last));
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The 16-byte key from the shared secret's text.
pub fn derive_key(secret: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&siphash24([0; 16], secret.as_bytes()).to_le_bytes());
    key[8..].copy_from_slice(&siphash24([1; 16], secret.as_bytes()).to_le_bytes());
    key
}

/// The cookie of a total: "CNT1", the total (8 bytes, big-endian), the signature over both.
pub fn cookie(key: [u8; 16], total: u64) -> Vec<u8> {
    let mut c = b"CNT1".to_vec();
    c.extend_from_slice(&total.to_be_bytes());
    let tag = siphash24(key, &c);
    c.extend_from_slice(&tag.to_be_bytes());
    c
}

/// The total of a cookie whose signature checks out.
pub fn open_cookie(key: [u8; 16], cookie: &[u8]) -> Option<u64> {
    let (body, tag) = cookie.split_at_checked(12)?;
    let total = body.strip_prefix(b"CNT1")?;
    let tag: [u8; 8] = tag.try_into().ok()?;
    let total: [u8; 8] = total.try_into().ok()?;
    (siphash24(key, body) == u64::from_be_bytes(tag)).then_some(u64::from_be_bytes(total))
}

/// One session's counter.
struct Counter {
    total: u64,
    key: [u8; 16],
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
        match open_cookie(self.key, cookie) {
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
            .send_cookie(&cookie(self.key, self.total))
            .and_then(|()| session.send_data(COUNTER_PPID, &self.total.to_be_bytes()));
        match sent {
            Ok(()) => say(&format!("total {}", self.total)),
            Err(e) => eprintln!("counter_pe: {e}"),
        }
    }

    fn on_error(&mut self, error: &SessionError) {
        eprintln!("counter_pe: {error}");
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
        args.listen,
        PeSessionConfig {
            generation: registrar.generation,
            ..PeSessionConfig::new(args.pool.as_bytes())
        },
        SessionOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let port = server.local_addr().map_err(|e| e.to_string())?.port();
    let mut config = pe::Config::new(vec![registrar.registrar], args.pool.as_bytes());
    config.generation = registrar.generation;
    config.transport.port = port;
    config.transport.transport_use = TRANSPORT_USE_DATA_PLUS_CONTROL;
    let handle = Pe::register(config).map_err(|e| e.to_string())?;
    let me = handle.pe_id();
    say(&format!("pe {} port {port}", me.0));
    let key = derive_key(&args.key);
    let pool = args.pool.clone();
    let result = server.run(move |_peer| Counter {
        total: 0,
        key,
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
