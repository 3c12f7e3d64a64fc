//! Transport URLs (`sctp://`, `tcp://`, `mptcp://`, `udp://`, optional `?generation=rfc|ng`):
//! `rserpool-net`'s, re-exported under the path the configuration, the core and the drivers use.

pub use rserpool_net::{Transport, TransportUrl};
