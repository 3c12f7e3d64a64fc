//! Metrics exposition: the workers' counters ([`WorkerMetrics`], kept by each worker in
//! `core::counters`) in the Prometheus text format summed over workers ([`render`]), the
//! process-wide facts shown next to them ([`ProcessInfo`]), the standard `process_*` metrics read
//! from `/proc/self`, and the small HTTP endpoint that serves them ([`MetricsServer`]).

mod process;
mod render;
mod server;

pub use crate::core::Protocol;
pub use crate::core::counters::{
    Limit, RemovalReason, RequestKind, SctpUdpOutcome, TransportLabel, WorkerMetrics,
};
pub use render::render;
pub use server::MetricsServer;

/// Process-wide facts exposed next to the worker metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// This registrar's PR ID.
    pub pr_id: u64,
    /// The software version.
    pub version: &'static str,
    /// When the process started, in seconds since the Unix epoch.
    pub started_unix_secs: u64,
    /// The I/O driver: `"io_uring"` or `"epoll"`.
    pub driver: &'static str,
}
