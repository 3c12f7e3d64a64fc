//! The registrar's socket layer under the path its daemon and drivers use: the sockets, their
//! errors and the host probes of `rserpool-net`, re-exported, and the io_uring probe of the driver
//! choice, which is the registrar's own.

mod uring_probe;

pub use rserpool_net::{
    AssocState, NetError, SctpAssocId, SctpRecv, SctpSocket, announce_socket, bind_udp,
    configure_accepted, connect_outcome, connect_stream, listen_stream, online_cores,
    pin_current_thread, sctp_support,
};
pub use uring_probe::io_uring_support;
