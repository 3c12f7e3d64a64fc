//! `rserpool-endpoint` owns the ASAP client side (RFC 5352): the pool element (PE: register,
//! re-register, answer keep-alives, deregister, fail over) and the pool user (PU: server hunt,
//! handle resolution with a cache, unreachable reports, member selection), each as a sans-I/O
//! state machine ([`pe::PoolElement`], [`pu::PoolUser`]) plus a small blocking driver over SCTP,
//! TCP and MPTCP, with stateless handle resolution over UDP ([`driver`]); and the `rserpool`
//! command line.
//!
//! The cores never read a clock and never touch a socket: the caller feeds them received
//! messages, connection outcomes and the current time in milliseconds ([`Millis`]), asks
//! [`pe::PoolElement::poll_timeout`] when to call back, and carries out the [`Action`]s they
//! return. The driver does exactly that with threads and blocking sockets.
//!
//! A pool element with the driver (it deregisters when the handle is dropped):
//!
//! ```no_run
//! use rserpool_endpoint::driver::Pe;
//! use rserpool_endpoint::pe::Config;
//! use rserpool_protocol::Policy;
//!
//! let registrar = "tcp://127.0.0.1:3863".parse().unwrap();
//! let mut config = Config::new(vec![registrar], "EchoPool");
//! config.transport.port = 7; // where users reach this PE
//! config.policy = Policy::LeastUsed { load: 0 };
//! let pe = Pe::register(config).expect("registered");
//! println!("registered as {} at {}", pe.pe_id(), pe.registrar().unwrap());
//! pe.set_policy(Policy::LeastUsed { load: 0x4000_0000 }); // pushed by re-registration
//! pe.deregister().expect("deregistered");
//! ```
//!
//! A pool user:
//!
//! ```no_run
//! use rserpool_endpoint::driver::Pu;
//! use rserpool_endpoint::pu::Config;
//!
//! let registrar = "tcp://127.0.0.1:3863".parse().unwrap();
//! let mut pu = Pu::new(Config::new(vec![registrar]));
//! for pe in pu.resolve(b"EchoPool").expect("resolved") {
//!     println!("{} at {:?} port {}", pe.id, pe.addresses(), pe.port());
//! }
//! ```
//!
//! The sans-I/O core of a pool user, driven by hand:
//!
//! ```
//! use rserpool_endpoint::pu::{Config, PoolUser};
//! use rserpool_endpoint::Action;
//!
//! let registrar = "tcp://127.0.0.1:3863".parse().unwrap();
//! let mut pu = PoolUser::new(Config::new(vec![registrar]), 1);
//! pu.resolve(b"EchoPool", None, 0);
//! // No home PR yet: the core asks for a connection (server hunt, RFC 5352 §3.6).
//! assert!(matches!(pu.poll_action(), Some(Action::Connect { .. })));
//! ```

pub mod driver;
mod error;
mod info;
pub mod pe;
pub mod pu;
mod registrar;
pub mod servers;
pub mod session;

pub use error::{Cause, ConnectFailure, DatagramFailure, Error};
pub use info::{PeInfo, PeTransport, policy_name};
pub use registrar::{Registrar, RegistrarUrl, StreamTransport, UrlError};
/// The endpoint's random source (PE identifiers, random member selection): the handlespace's
/// xoshiro256++ generator.
pub use rserpool_handlespace::Rng;

/// Milliseconds on the caller's monotonic clock; only differences matter.
pub type Millis = u64;

/// A connection to a registrar, named by the core that asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What a core asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<E> {
    /// Open a connection to `registrar`, then report [`pe::PoolElement::on_connected`] or
    /// [`pe::PoolElement::on_connect_failed`] (likewise for the PU) with `conn`.
    Connect {
        /// The name of the new connection.
        conn: ConnId,
        /// Where to connect.
        registrar: Registrar,
    },
    /// Send one encoded ASAP message on a connection (framed by its own length on a stream).
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        message: Vec<u8>,
    },
    /// Close a connection, or abandon a connection attempt.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Something for the application.
    Event(E),
}

/// The RFC 5352 §7 timers and counters of an ASAP endpoint, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// T1-ENRPrequest: wait for a handle resolution response (RFC: 15 s).
    pub t1_request: Millis,
    /// T2-registration: wait for a registration response (RFC: 30 s).
    pub t2_registration: Millis,
    /// T3-deregistration: wait for a deregistration response (RFC: 30 s).
    pub t3_deregistration: Millis,
    /// T5-Serverhunt: initial length of a server hunt round (RFC: 10 s).
    pub t5_server_hunt: Millis,
    /// T7-ENRPoutdate: lifetime of a registrar learnt from an announce (RFC: 5 s).
    pub t7_announce: Millis,
    /// RETRAN-MAX: ceiling of the doubled T5 (RFC: 60 s).
    pub retran_max: Millis,
    /// MAX-REG-ATTEMPT: registration or deregistration attempts before giving up (RFC: 2).
    pub max_reg_attempt: u32,
    /// MAX-REQUEST-RETRANSMIT: retransmissions of a request before an error (RFC: 2).
    pub max_request_retransmit: u32,
    /// Connection attempts at once during a server hunt (SH1: at most 3).
    pub max_parallel_connects: usize,
}

impl Default for Timers {
    /// The defaults of RFC 5352 §7.
    fn default() -> Self {
        Self {
            t1_request: 15_000,
            t2_registration: 30_000,
            t3_deregistration: 30_000,
            t5_server_hunt: 10_000,
            t7_announce: 5_000,
            retran_max: 60_000,
            max_reg_attempt: 2,
            max_request_retransmit: 2,
            max_parallel_connects: servers::MAX_PARALLEL_CONNECTS,
        }
    }
}

/// Encodes an ASAP message into a new buffer of its exact size.
fn encode(
    message: &rserpool_protocol::AsapMessage<'_>,
    generation: rserpool_protocol::Generation,
) -> Result<Vec<u8>, rserpool_protocol::EncodeError> {
    let mut buf = vec![0; rserpool_protocol::MAX_MESSAGE_LEN + 4];
    let len = message.encode(generation, &mut buf)?;
    buf.truncate(len);
    Ok(buf)
}
