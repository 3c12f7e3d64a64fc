//! `rserpool-bench` owns the load generator of the RSerPool pool registrar: closed- and open-loop
//! ASAP load over TCP and MPTCP (`resolve`, `register`, `churn`), a steady keep-alive population
//! (`keepalive`), new PEs registered once each into pools of a given size, in a window or all at
//! once as after a registrar restart (`register --population`, `storm`), a built-in echo server
//! as the ceiling (`echo`), the ENRP start-up synchronisation of a second spawned registrar and
//! its restart (`resync`), the takeover of a killed registrar's PEs by the survivors of a scope
//! of three (`takeover`), a fault test of an operating scope of real registrar processes
//! (`chaos`), the hostile-input soak (`hostile`), a spawned or external registrar as the target,
//! TLS (`--tls`: `tcp+tls://` with a throwaway PKI, the echo server too), a subcommand per
//! scenario with only its options, and text, JSON or CSV reports with HDR latency statistics, a
//! per-second series, an HDR interval log and whole-run totals in the registrar's terms; and a
//! sweep of the registrar's I/O keys under the `resolve` load that writes the best point as a
//! profile (`sweep`); and the push latency of pool subscriptions (`subscribe`). See `docs/benchmarking.md`.

pub mod app;
pub mod chaos;
pub mod cli;
pub mod echo;
pub mod error;
pub mod fleet;
pub mod hostile;
pub mod load;
pub mod net;
pub mod population;
pub mod report;
pub mod sctp_udp;
pub mod series;
pub mod subscribe;
pub mod sweep;
pub mod takeover;
pub mod target;
pub mod tls;
pub mod workload;

pub use cli::{Cli, ScenarioKind};
pub use error::{Error, Result};
pub use report::{RunReport, Summary};
