//! The registrar's socket layer: it owns every socket the registrar opens and how it is set up —
//! TCP and MPTCP listeners, UDP sockets for requests and announces, SCTP one-to-many sockets with
//! per-message PPID, stream and association id, plus the host probes the I/O drivers need (SCTP,
//! MPTCP and io_uring support, CPU pinning, busy polling).
//!
//! Every socket is created non-blocking and close-on-exec. All `unsafe` code of the crate lives in
//! the private `sys` submodule (raw socket options, `sendmsg`/`recvmsg`, thread affinity); the rest
//! of this module builds and parses the kernel's structures as bounds-checked byte slices.

mod error;
mod host;
mod sctp;
mod stream;
mod sys;
mod udp;

pub use error::NetError;
pub use host::{io_uring_support, online_cores, pin_current_thread, set_busy_poll};
pub use sctp::{
    AssocState, SctpAssocId, SctpRecv, SctpSocket, recv_ppid, sctp_nodelay, sctp_support, send_ppid,
};
pub use stream::{configure_accepted, connect_outcome, connect_stream, listen_stream};
pub use udp::{announce_socket, bind_udp};
