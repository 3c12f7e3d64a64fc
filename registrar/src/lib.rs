//! `rserpool-registrar` owns the Pool Registrar (PR): the ASAP server side (and, later, the ENRP
//! peer side) as a sans-I/O state machine fed with messages and time, the I/O drivers that feed it
//! (io_uring, epoll), configuration and tuning profiles, metrics, and the daemon.

pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod driver;
pub mod metrics;
