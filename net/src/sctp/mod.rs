//! Kernel SCTP (RFC 4960, socket API RFC 6458) for servers and clients: creating SCTP sockets,
//! the options every one of them gets (`SCTP_NODELAY` above all), and the control messages that
//! carry a message's PPID, stream and association (`SCTP_SNDINFO` built, `SCTP_RCVINFO` parsed).
//! The registrar's one-to-many listener is in `listener`, the one-to-one client of PEs, PUs and
//! tests in `client`, the one-to-one listener of a PE's session server in `acceptor`, many
//! messages per system call (`recvmmsg`/`sendmmsg`) for both kinds in `batch`. The kernel's
//! structures (`sctp_sndinfo`, `sctp_rcvinfo`, `sctp_notification`, `sctp_getaddrs`,
//! `sockaddr_in`/`_in6`) are built and parsed as byte slices, every field read bounds-checked:
//! lengths inside them are never trusted.

mod acceptor;
mod batch;
mod client;
mod listener;

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, BorrowedFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{NetError, SocketUse};
use crate::sys;

pub use acceptor::SctpListener;
pub use batch::{SCTP_BATCH_MAX, SctpRecvBatch};
pub use client::{SctpClient, SctpPart};
pub use listener::{AssocState, SctpAssocId, SctpRecv, SctpSocket};

/// Streams asked for in each direction (`SCTP_INITMSG`).
const STREAMS: u16 = 16;
/// Room for the `SCTP_RCVINFO` control message of a received message, with spare: what a
/// receive made by other means (io_uring, `recvmmsg`) must leave for control messages.
pub const RECV_CONTROL_LEN: usize = 2 * cmsg_space(size_of::<libc::sctp_rcvinfo>());
/// The length of an `SCTP_SNDINFO` control message ([`send_control`]).
pub const SNDINFO_CMSG_LEN: usize = cmsg_space(size_of::<libc::sctp_sndinfo>());
/// Where the data of a control message starts.
pub(crate) const CMSG_HEADER: usize = cmsg_align(size_of::<libc::cmsghdr>());

/// `CMSG_ALIGN`: control messages are aligned to `size_t`.
const fn cmsg_align(len: usize) -> usize {
    (len + size_of::<usize>() - 1) & !(size_of::<usize>() - 1)
}

/// `CMSG_SPACE`: the room one control message with `len` bytes of data takes.
pub(crate) const fn cmsg_space(len: usize) -> usize {
    CMSG_HEADER + cmsg_align(len)
}

/// The `socket()` call for `v6` and `ty`, as error messages name it.
fn socket_call(v6: bool, ty: Type) -> &'static str {
    match (v6, ty == Type::STREAM) {
        (false, false) => "socket(AF_INET, SOCK_SEQPACKET, IPPROTO_SCTP)",
        (true, false) => "socket(AF_INET6, SOCK_SEQPACKET, IPPROTO_SCTP)",
        (false, true) => "socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP)",
        (true, true) => "socket(AF_INET6, SOCK_STREAM, IPPROTO_SCTP)",
    }
}

/// A non-blocking, close-on-exec SCTP socket of type `ty` (one-to-many `SEQPACKET` or one-to-one
/// `STREAM`) for `used_for`; a kernel without SCTP gives [`NetError::SctpUnavailable`].
pub(crate) fn sctp_socket(v6: bool, ty: Type, used_for: SocketUse) -> Result<Socket, NetError> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    Socket::new(domain, ty.nonblocking().cloexec(), Some(Protocol::SCTP)).map_err(|source| {
        let call = socket_call(v6, ty);
        match source.raw_os_error() {
            Some(
                libc::EPROTONOSUPPORT
                | libc::ESOCKTNOSUPPORT
                | libc::EAFNOSUPPORT
                | libc::EACCES
                | libc::EPERM,
            ) => NetError::SctpUnavailable {
                call,
                used_for,
                source,
            },
            _ => NetError::io(format!("create an SCTP socket ({call})"), source),
        }
    })
}

/// Checks that the kernel can create SCTP sockets (the one-to-many kind the registrar listens on).
pub fn sctp_support() -> Result<(), NetError> {
    sctp_socket(false, Type::SEQPACKET, SocketUse::Listen).map(drop)
}

/// Sets an `int` option at level `IPPROTO_SCTP`.
fn set_sctp_int(fd: BorrowedFd<'_>, name: i32, value: i32) -> io::Result<()> {
    sys::set_option(fd, libc::IPPROTO_SCTP, name, &value.to_ne_bytes())
}

/// Sets what every SCTP socket, listener or client, needs: `SCTP_NODELAY` (without it small messages
/// wait for the peer's delayed SACK, 200 ms), `SCTP_RECVRCVINFO` (PPID, stream and association of
/// each message) and `SCTP_INITMSG` with [`STREAMS`] streams each way.
fn set_common_options(sock: &Socket) -> Result<(), (&'static str, io::Error)> {
    let fd = sock.as_fd();
    set_sctp_int(fd, libc::SCTP_NODELAY, 1).map_err(|e| ("SCTP_NODELAY", e))?;
    set_sctp_int(fd, libc::SCTP_RECVRCVINFO, 1).map_err(|e| ("SCTP_RECVRCVINFO", e))?;
    let mut init = [0; size_of::<libc::sctp_initmsg>()];
    put(
        &mut init,
        offset_of!(libc::sctp_initmsg, sinit_num_ostreams),
        &STREAMS.to_ne_bytes(),
    );
    put(
        &mut init,
        offset_of!(libc::sctp_initmsg, sinit_max_instreams),
        &STREAMS.to_ne_bytes(),
    );
    sys::set_option(fd, libc::IPPROTO_SCTP, libc::SCTP_INITMSG, &init)
        .map_err(|e| ("SCTP_INITMSG", e))
}

/// Whether `SCTP_NODELAY` is on for the SCTP socket `sock`.
pub fn sctp_nodelay(sock: &impl AsFd) -> io::Result<bool> {
    let mut v = [0; 4];
    let n = sys::get_option(sock.as_fd(), libc::IPPROTO_SCTP, libc::SCTP_NODELAY, &mut v)?;
    Ok(v[..n].iter().any(|&b| b != 0))
}

/// The `SCTP_SNDINFO` control message that sends a message on association `assoc` of a
/// one-to-many socket with PPID `ppid` on stream 0: for sends made by other means (io_uring's
/// `sendmsg`, `sendmmsg`).
pub fn send_control(assoc: SctpAssocId, ppid: u32) -> [u8; SNDINFO_CMSG_LEN] {
    sndinfo_cmsg(0, 0, ppid, assoc.0)
}

/// An `SCTP_SNDINFO` control message: send on `stream` with `ppid` and `flags` to `assoc`.
fn sndinfo_cmsg(stream: u16, flags: u16, ppid: u32, assoc: i32) -> [u8; SNDINFO_CMSG_LEN] {
    let mut c = [0; SNDINFO_CMSG_LEN];
    put_cmsg_header(
        &mut c,
        libc::IPPROTO_SCTP,
        libc::SCTP_SNDINFO,
        size_of::<libc::sctp_sndinfo>(),
    );
    let d = &mut c[CMSG_HEADER..];
    put(
        d,
        offset_of!(libc::sctp_sndinfo, snd_sid),
        &stream.to_ne_bytes(),
    );
    put(
        d,
        offset_of!(libc::sctp_sndinfo, snd_flags),
        &flags.to_ne_bytes(),
    );
    // the PPID travels as the application wrote it: network byte order
    put(
        d,
        offset_of!(libc::sctp_sndinfo, snd_ppid),
        &ppid.to_be_bytes(),
    );
    put(
        d,
        offset_of!(libc::sctp_sndinfo, snd_assoc_id),
        &assoc.to_ne_bytes(),
    );
    c
}

/// Stream, PPID and association of a received message, from its `SCTP_RCVINFO` control message.
struct RcvInfo {
    stream: u16,
    ppid: u32,
    assoc: i32,
}

/// Finds and parses the `SCTP_RCVINFO` control message in `control`.
fn parse_rcvinfo(control: &[u8]) -> Option<RcvInfo> {
    let mut rest = control;
    while rest.len() >= CMSG_HEADER {
        let len = usize::from_ne_bytes(field(rest, offset_of!(libc::cmsghdr, cmsg_len))?);
        let level = i32::from_ne_bytes(field(rest, offset_of!(libc::cmsghdr, cmsg_level))?);
        let ty = i32::from_ne_bytes(field(rest, offset_of!(libc::cmsghdr, cmsg_type))?);
        let data = rest.get(CMSG_HEADER..len)?;
        if level == libc::IPPROTO_SCTP && ty == libc::SCTP_RCVINFO {
            return Some(RcvInfo {
                stream: u16::from_ne_bytes(field(data, offset_of!(libc::sctp_rcvinfo, rcv_sid))?),
                ppid: u32::from_be_bytes(field(data, offset_of!(libc::sctp_rcvinfo, rcv_ppid))?),
                assoc: i32::from_ne_bytes(field(
                    data,
                    offset_of!(libc::sctp_rcvinfo, rcv_assoc_id),
                )?),
            });
        }
        rest = rest.get(cmsg_align(len.max(CMSG_HEADER))..)?;
    }
    None
}

/// The error for a data message that came without `SCTP_RCVINFO`.
fn missing_rcvinfo() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "an SCTP message arrived without its SCTP_RCVINFO (PPID, stream, association): the \
         socket must have SCTP_RECVRCVINFO on, as SctpSocket::listen and SctpClient::connect set it",
    )
}

/// `N` bytes of `bytes` at `offset`, or `None` if they are not all there.
fn field<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset.checked_add(N)?)?.try_into().ok()
}

/// Copies `value` into `buf` at `offset` (only with offsets of the structures built here).
/// Writes the `cmsghdr` of a control message of `level` and `kind` with `data_len` bytes of data
/// at the start of `buf` (the data goes at [`CMSG_HEADER`]).
pub(crate) fn put_cmsg_header(buf: &mut [u8], level: i32, kind: i32, data_len: usize) {
    let len = CMSG_HEADER + data_len;
    put(buf, offset_of!(libc::cmsghdr, cmsg_len), &len.to_ne_bytes());
    put(
        buf,
        offset_of!(libc::cmsghdr, cmsg_level),
        &level.to_ne_bytes(),
    );
    put(
        buf,
        offset_of!(libc::cmsghdr, cmsg_type),
        &kind.to_ne_bytes(),
    );
}

fn put(buf: &mut [u8], offset: usize, value: &[u8]) {
    buf[offset..offset + value.len()].copy_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sctp_support_explains_what_is_missing() {
        match sctp_support() {
            // a host with kernel SCTP (the UML test runs there)
            Ok(()) => {}
            Err(e @ NetError::SctpUnavailable { .. }) => {
                let text = e.to_string();
                assert!(text.starts_with("SCTP is not available: "), "{text}");
                assert!(
                    text.contains("socket(AF_INET, SOCK_SEQPACKET, IPPROTO_SCTP) failed with"),
                    "{text}"
                );
                assert!(text.contains("modprobe sctp"), "{text}");
                assert!(text.contains("remove the sctp:// listener"), "{text}");
                let e =
                    SctpSocket::listen(&["127.0.0.1:0".parse().unwrap()], true, 8, 0).unwrap_err();
                assert!(matches!(e, NetError::SctpUnavailable { .. }), "{e}");
                let e =
                    SctpClient::connect("[::1]:9".parse().unwrap(), None, Duration::from_secs(1))
                        .unwrap_err();
                let text = e.to_string();
                assert!(text.contains("socket(AF_INET6, SOCK_STREAM"), "{text}");
                assert!(
                    text.ends_with("connect over tcp:// or mptcp:// instead"),
                    "{text}"
                );
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn sndinfo_round_trips_through_the_rcvinfo_parser_layout() {
        let c = sndinfo_cmsg(3, 0, 11, 42);
        assert_eq!(c.len(), 32);
        assert_eq!(
            usize::from_ne_bytes(c[..8].try_into().unwrap()),
            16 + size_of::<libc::sctp_sndinfo>()
        );
        assert_eq!(&c[20..24], &11u32.to_be_bytes());
        let abort = sndinfo_cmsg(0, libc::SCTP_ABORT as u16, 0, 7);
        assert_eq!(u16::from_ne_bytes([abort[18], abort[19]]), 4);
    }

    /// A control buffer with one `SCTP_RCVINFO` after an unrelated control message.
    fn rcvinfo_control(stream: u16, ppid: u32, assoc: i32) -> Vec<u8> {
        let mut c = Vec::new();
        let mut cmsg = |level: i32, ty: i32, data: &[u8]| {
            let start = c.len();
            c.extend_from_slice(&(CMSG_HEADER + data.len()).to_ne_bytes());
            c.extend_from_slice(&level.to_ne_bytes());
            c.extend_from_slice(&ty.to_ne_bytes());
            c.extend_from_slice(data);
            c.resize(start + cmsg_space(data.len()), 0);
        };
        cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &[1, 2, 3, 4]);
        let mut info = [0; size_of::<libc::sctp_rcvinfo>()];
        put(
            &mut info,
            offset_of!(libc::sctp_rcvinfo, rcv_sid),
            &stream.to_ne_bytes(),
        );
        put(
            &mut info,
            offset_of!(libc::sctp_rcvinfo, rcv_ppid),
            &ppid.to_be_bytes(),
        );
        put(
            &mut info,
            offset_of!(libc::sctp_rcvinfo, rcv_assoc_id),
            &assoc.to_ne_bytes(),
        );
        cmsg(libc::IPPROTO_SCTP, libc::SCTP_RCVINFO, &info);
        c
    }

    #[test]
    fn finds_rcvinfo_and_refuses_cut_control_data() {
        let c = rcvinfo_control(9, 11, 1234);
        let info = parse_rcvinfo(&c).unwrap();
        assert_eq!((info.stream, info.ppid, info.assoc), (9, 11, 1234));
        // the last control message's padding may be missing, nothing else
        let end = c.len() - cmsg_space(size_of::<libc::sctp_rcvinfo>())
            + CMSG_HEADER
            + size_of::<libc::sctp_rcvinfo>();
        for cut in 0..c.len() {
            assert_eq!(
                parse_rcvinfo(&c[..cut]).is_some(),
                cut >= end,
                "cut at {cut}"
            );
        }
        // a cmsg_len that points past the buffer, or that is shorter than the header
        let mut bad = c.clone();
        bad[..8].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert!(parse_rcvinfo(&bad).is_none());
        let mut zero = c;
        zero[..8].copy_from_slice(&0usize.to_ne_bytes());
        assert!(parse_rcvinfo(&zero).is_none());
    }
}
