//! `rserpool-registrar` owns the Pool Registrar (PR): the ASAP server side (RFC 5352) and the ENRP
//! peer side (RFC 5353) as a sans-I/O state machine fed with messages and time (`core`), the I/O
//! drivers that feed it (io_uring, epoll), configuration and tuning profiles, metrics, and the
//! daemon.

pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod driver;
pub mod host_check;
pub mod metrics;
pub mod notify;
