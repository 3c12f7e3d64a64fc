//! `rserpool-net` owns the sockets of RSerPool: the registrar's listeners and peer connections,
//! and the client side that pool elements, pool users and the load generator share.
//!
//! - Transport URLs ([`TransportUrl`], [`Transport`], [`UrlError`]): the values and the parser
//!   live in `rserpool_protocol::url`, socket-free, so that the registrar's sans-I/O core can hold
//!   them; they are re-exported here with the sockets they name.
//! - Kernel SCTP (RFC 4960, socket API RFC 6458): the socket options every SCTP socket gets, the
//!   control messages that carry a message's PPID, stream and association (`SCTP_SNDINFO` built,
//!   `SCTP_RCVINFO` parsed) and notifications; the registrar's one-to-many listener
//!   ([`SctpSocket`]) and the one-to-one client ([`SctpClient`]).
//! - TCP and MPTCP ([`listen_stream`], [`connect_stream`], [`connect_stream_blocking`]) and UDP
//!   ([`bind_udp`], [`announce_socket`], [`announce_receiver`], [`local_ip_towards`]) set-up, and
//!   UDP's batched receives and sends ([`UdpRecvBatch`], [`send_batch_to`]) and segmentation
//!   offload ([`send_segmented_to`], [`udp_segment_control`], [`udp_gso_available`]).
//! - A client's connection to a registrar over SCTP, TCP or MPTCP ([`Connection`]), with ASAP's
//!   framing on byte streams.
//! - SCTP over UDP (RFC 6951, `sctp+udp://`) in user space: the sans-I/O state machines
//!   ([`sctp_udp`]) and the blocking one-association client over one UDP socket
//!   ([`SctpUdpClient`]) that [`Connection`] uses for it.
//! - TLS 1.3 over TCP and MPTCP ([`ServerTls`], [`ClientTls`], [`TlsSession`]): rustls with the
//!   ring provider, sans-I/O, certificates from PEM files, the peer's certificate names.
//! - With the feature `test-pki`, a throwaway CA for tests and benchmarks (`TestPki`).
//! - Port ownership ([`PortClaim`]): a registrar's listener ports are shared through
//!   `SO_REUSEPORT` among its own workers only; a second registrar, or any other socket, on one
//!   of them is refused.
//! - What the host offers the registrar's workers ([`usable_cores`], [`allowed_cores`],
//!   [`pin_current_thread`]).
//! - Errors that say what failed and what to do about it ([`NetError`]).
//!
//! # The `unsafe` boundary
//!
//! All `unsafe` code of the crate is in the private `sys` module (socket options as byte
//! buffers, `sendmsg`/`recvmsg` and the batched `sendmmsg`/`recvmmsg` with ancillary data,
//! thread affinity, the online CPU count), one `// SAFETY:` comment per block; the crate denies
//! `unsafe` everywhere else. Callers pass and get plain slices, and every kernel structure is
//! built and parsed as bounds-checked bytes.
//!
//! # The stream seam (TLS)
//!
//! A [`Connection`] over TCP or MPTCP reads and writes its bytes through one small private type,
//! `connection::ByteStream`: the socket's bytes as they are, or a [`TlsSession`] that encrypts
//! on write and decrypts on read over the same socket; the framing, [`Connection`]'s API and its
//! callers are the same for both.

mod connection;
mod error;
mod host;
mod ownership;
mod sctp;
pub mod sctp_udp;
mod sctp_udp_client;
mod stream;
#[allow(unsafe_code)]
mod sys;
#[cfg(any(test, feature = "test-pki"))]
mod test_pki;
mod tls;
mod udp;

pub use connection::Connection;
pub use error::{NetError, SocketUse};
pub use host::{
    allowed_cores, online_cores, pin_current_thread, raise_open_file_limit, set_busy_poll,
    usable_cores,
};
pub use ownership::PortClaim;
pub use rserpool_protocol::url::{Transport, TransportUrl, UrlError};
pub use sctp::{
    AssocState, RECV_CONTROL_LEN as SCTP_RECV_CONTROL_LEN, SCTP_BATCH_MAX,
    SNDINFO_CMSG_LEN as SCTP_SEND_CONTROL_LEN, SctpAssocId, SctpClient, SctpListener, SctpPart,
    SctpRecv, SctpRecvBatch, SctpSocket, sctp_nodelay, sctp_support,
    send_control as sctp_send_control,
};
pub use sctp_udp_client::SctpUdpClient;
pub use stream::{
    configure_accepted, connect_outcome, connect_stream, connect_stream_blocking,
    connect_stream_blocking_from, listen_stream, negotiated_transport,
};
#[cfg(feature = "test-pki")]
pub use test_pki::TestPki;
pub use tls::{
    ClientCertificate, ClientTls, ServerTls, TlsFiles, TlsSession, handshake_blocking, server_name,
};
pub use udp::{
    UDP_MAX_SEGMENTS, UDP_SEGMENT_CONTROL_LEN, UdpRecvBatch, announce_receiver, announce_socket,
    bind_udp, local_ip_towards, send_batch_to, send_segmented_to, set_dont_fragment,
    udp_gso_available, udp_segment_control,
};
