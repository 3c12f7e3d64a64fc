//! The registrar's SCTP listener: a one-to-many (`SOCK_SEQPACKET`) socket, multihomed through
//! `sctp_bindx`, on which every message comes with its PPID, stream and association id and
//! association changes come in line as notifications; aborting an association, and asking for
//! its peer's addresses and receive window; peeling an association off onto a socket of its own
//! (RFC 6458 §9.2), which the same type then serves.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{SockAddr, Socket, Type};

use super::{
    RECV_CONTROL_LEN, field, missing_rcvinfo, parse_rcvinfo, put, sctp_socket, set_common_options,
    sndinfo_cmsg,
};
use crate::error::{NetError, SocketUse};
use crate::sys;

// Socket options and notification types of linux/sctp.h that libc does not define.
/// `sctp_bindx(SCTP_BINDX_ADD_ADDR)` as a socket option.
const SCTP_SOCKOPT_BINDX_ADD: i32 = 100;
/// `sctp_getpaddrs` as a socket option.
const SCTP_GET_PEER_ADDRS: i32 = 108;
/// An association's state and peer window (RFC 6458 §8.2.1).
const SCTP_STATUS: i32 = 14;
/// `struct sctp_status`: 24 bytes, then a packed `struct sctp_paddrinfo` (an association id, a
/// `sockaddr_storage` and five 32-bit fields); the kernel refuses shorter buffers.
const SCTP_STATUS_LEN: usize = 24 + 4 + 128 + 5 * 4;
/// Where `sstat_rwnd` lies in `struct sctp_status`, after the association id and state.
const SSTAT_RWND: usize = 8;
/// Subscribe to one notification type (RFC 6458 §6.2.2, Linux 5.0+).
const SCTP_EVENT: i32 = 127;
/// `sctp_peeloff_flags` as a socket option (Linux 4.13+): the new socket's `O_NONBLOCK` and
/// `O_CLOEXEC` set in the same call.
const SCTP_SOCKOPT_PEELOFF_FLAGS: i32 = 122;
/// `struct sctp_peeloff_flags_arg_t { sctp_assoc_t associd; int sd; unsigned flags; }`.
const PEELOFF_ARG_LEN: usize = 12;
/// The default `struct sctp_sndinfo` of a socket's sends (RFC 6458 §8.1.31).
const SCTP_DEFAULT_SNDINFO: i32 = 34;
/// `sctp_assoc_change` notification type.
const SCTP_ASSOC_CHANGE: u16 = 0x8001;
/// `sctp_shutdown_event` notification type.
const SCTP_SHUTDOWN_EVENT: u16 = 0x8005;

/// An SCTP association on a one-to-many socket (`sctp_assoc_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SctpAssocId(pub i32);

/// The new state an `SCTP_ASSOC_CHANGE` notification reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssocState {
    /// The association is up and can carry data (`SCTP_COMM_UP`).
    CommUp,
    /// The association failed: aborted, or the peer is unreachable (`SCTP_COMM_LOST`).
    CommLost,
    /// The peer restarted; the association id stays (`SCTP_RESTART`).
    Restart,
    /// A graceful shutdown has completed (`SCTP_SHUTDOWN_COMP`).
    ShutdownComplete,
    /// The association could not be set up (`SCTP_CANT_STR_ASSOC`).
    CantStartAssoc,
}

/// What one [`SctpSocket::recv`] received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SctpRecv {
    /// A user message (or the part of it that fitted) now in the start of the buffer.
    Data {
        /// The association it came on.
        assoc: SctpAssocId,
        /// Its payload protocol identifier (11 for ASAP, 12 for ENRP).
        ppid: u32,
        /// The stream it came on.
        stream: u16,
        /// How many bytes of the buffer it filled.
        len: usize,
        /// Whether this is the message's end (`MSG_EOR`); if not, the rest comes with the next
        /// receives.
        complete: bool,
    },
    /// An association changed state.
    AssocChange {
        /// The association.
        assoc: SctpAssocId,
        /// Its new state.
        state: AssocState,
    },
    /// The peer has begun a graceful shutdown; no more data will come on the association.
    Shutdown {
        /// The association.
        assoc: SctpAssocId,
    },
    /// A notification the registrar does not act on (or the rest of one that did not fit).
    OtherNotification,
}

/// Subscribes to one notification type for every association of the socket (`SCTP_EVENT` with
/// `struct sctp_event { sctp_assoc_t se_assoc_id; __u16 se_type; __u8 se_on; }`, 8 bytes).
fn subscribe(fd: BorrowedFd<'_>, event: u16) -> io::Result<()> {
    let mut ev = [0; 8];
    put(&mut ev, 0, &libc::SCTP_FUTURE_ASSOC.to_ne_bytes());
    put(&mut ev, 4, &event.to_ne_bytes());
    ev[6] = 1;
    sys::set_option(fd, libc::IPPROTO_SCTP, SCTP_EVENT, &ev)
}

/// Decodes the start of a `union sctp_notification` (header: `__u16 sn_type; __u16 sn_flags;
/// __u32 sn_length`). The bytes examined are the fewer of those received and of `sn_length`.
fn parse_notification(received: &[u8]) -> io::Result<SctpRecv> {
    /// `N` bytes at `offset` of notification `ty`, which needs `need` bytes in all.
    fn read<const N: usize>(
        bytes: &[u8],
        ty: u16,
        offset: usize,
        need: usize,
    ) -> io::Result<[u8; N]> {
        field(bytes, offset).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "SCTP notification of type {ty:#06x} has {} of the {need} bytes it needs: the \
                     receive buffer is too small (give recv at least 64 bytes) or the kernel sent \
                     a malformed notification",
                    bytes.len()
                ),
            )
        })
    }
    let ty = u16::from_ne_bytes(read(received, 0, 0, 8)?);
    let length = u32::from_ne_bytes(read(received, ty, 4, 8)?);
    let bytes = &received[..received
        .len()
        .min(usize::try_from(length).unwrap_or(usize::MAX))];
    match ty {
        SCTP_ASSOC_CHANGE => {
            // struct sctp_assoc_change: header, __u16 sac_state, __u16 sac_error,
            // __u16 sac_outbound_streams, __u16 sac_inbound_streams, sctp_assoc_t sac_assoc_id
            const NEED: usize = 20;
            let state = u16::from_ne_bytes(read(bytes, ty, 8, NEED)?);
            let assoc = SctpAssocId(i32::from_ne_bytes(read(bytes, ty, 16, NEED)?));
            let state = match state {
                0 => AssocState::CommUp,
                1 => AssocState::CommLost,
                2 => AssocState::Restart,
                3 => AssocState::ShutdownComplete,
                4 => AssocState::CantStartAssoc,
                _ => return Ok(SctpRecv::OtherNotification),
            };
            Ok(SctpRecv::AssocChange { assoc, state })
        }
        SCTP_SHUTDOWN_EVENT => {
            // struct sctp_shutdown_event: header, sctp_assoc_t sse_assoc_id
            let assoc = SctpAssocId(i32::from_ne_bytes(read(bytes, ty, 8, 12)?));
            Ok(SctpRecv::Shutdown { assoc })
        }
        _ => Ok(SctpRecv::OtherNotification),
    }
}

/// Appends `addr` as a `sockaddr_in` or `sockaddr_in6`, as `sctp_bindx` takes them packed.
fn push_sockaddr(addr: &SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(a) => {
            out.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            out.extend_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&[0; 8]);
        }
        SocketAddr::V6(a) => {
            out.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            out.extend_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&a.flowinfo().to_be_bytes());
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.scope_id().to_ne_bytes());
        }
    }
}

/// Parses a `struct sctp_getaddrs` (`sctp_assoc_t assoc_id; __u32 addr_num;` then `addr_num`
/// packed `sockaddr_in`/`sockaddr_in6`). IPv4-mapped IPv6 addresses come back as IPv4.
fn parse_getaddrs(bytes: &[u8]) -> io::Result<Vec<SocketAddr>> {
    let bad = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed SCTP_GET_PEER_ADDRS answer: {what}"),
        )
    };
    let count = field(bytes, 4)
        .map(u32::from_ne_bytes)
        .ok_or_else(|| bad(format!("{} bytes, shorter than its header", bytes.len())))?;
    let mut rest = &bytes[8..];
    let mut addrs = Vec::new();
    for i in 0..count {
        let family = field(rest, 0)
            .map(u16::from_ne_bytes)
            .ok_or_else(|| bad(format!("it announces {count} addresses but ends after {i}")))?;
        let (len, v6) = match i32::from(family) {
            libc::AF_INET => (16, false),
            libc::AF_INET6 => (28, true),
            other => return Err(bad(format!("address {i} has the unknown family {other}"))),
        };
        let entry = rest
            .get(..len)
            .ok_or_else(|| bad(format!("address {i} is cut off")))?;
        // the indexing below stays within the `len` bytes just checked
        let port = u16::from_be_bytes([entry[2], entry[3]]);
        let addr: SocketAddr = if v6 {
            let mut ip = [0; 16];
            ip.copy_from_slice(&entry[8..24]);
            let ip = Ipv6Addr::from(ip);
            match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddrV4::new(v4, port).into(),
                None => {
                    let flow = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]);
                    let scope = u32::from_ne_bytes([entry[24], entry[25], entry[26], entry[27]]);
                    SocketAddrV6::new(ip, port, flow, scope).into()
                }
            }
        } else {
            SocketAddrV4::new(Ipv4Addr::new(entry[4], entry[5], entry[6], entry[7]), port).into()
        };
        addrs.push(addr);
        rest = &rest[len..];
    }
    Ok(addrs)
}

/// An SCTP one-to-many (`SOCK_SEQPACKET`) socket, as the registrar listens on it: many
/// associations on one socket, each message with its PPID, stream and association id, and
/// association changes reported in line as notifications. An association peeled off it
/// ([`SctpSocket::peel_off`]) is served by the same type: the kernel then ignores the association
/// ids passed in, and reports the association's own id with each message.
#[derive(Debug)]
pub struct SctpSocket {
    sock: Socket,
    /// The last notification received did not fit the buffer; its rest comes next.
    notification_continues: AtomicBool,
}

impl SctpSocket {
    /// Opens a non-blocking, close-on-exec one-to-many listener bound to `addrs`: the first
    /// address with `bind()`, the others added with `sctp_bindx(SCTP_BINDX_ADD_ADDR)` (a multihomed
    /// endpoint; all on the same port, or port 0 for the first one's).
    ///
    /// Sets `SO_REUSEADDR`, `SO_REUSEPORT` when `reuse_port`, `IPV6_V6ONLY` when all addresses are
    /// IPv6 (an IPv6 socket with IPv4 addresses serves both), `SO_RCVBUF`/`SO_SNDBUF` to
    /// `buffer_bytes` unless it is 0, `SCTP_NODELAY`, `SCTP_RECVRCVINFO`, 16 streams each way
    /// (`SCTP_INITMSG`), and subscribes to `SCTP_ASSOC_CHANGE` and `SCTP_SHUTDOWN_EVENT`.
    pub fn listen(
        addrs: &[SocketAddr],
        reuse_port: bool,
        backlog: u32,
        buffer_bytes: usize,
    ) -> Result<Self, NetError> {
        let Some((first, more)) = addrs.split_first() else {
            return Err(NetError::InvalidRequest(
                "an SCTP listener needs at least one address to bind".to_owned(),
            ));
        };
        let any_v6 = addrs.iter().any(SocketAddr::is_ipv6);
        let all_v6 = addrs.iter().all(SocketAddr::is_ipv6);
        let name = addrs
            .iter()
            .map(|a| format!("sctp://{a}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sock = sctp_socket(any_v6, Type::SEQPACKET, SocketUse::Listen)?;
        let fail = |what: &str, e| NetError::io(format!("{what} on the listener for {name}"), e);
        sock.set_reuse_address(true)
            .map_err(|e| fail("set SO_REUSEADDR", e))?;
        if reuse_port {
            sock.set_reuse_port(true)
                .map_err(|e| fail("set SO_REUSEPORT", e))?;
        }
        if any_v6 {
            sock.set_only_v6(all_v6)
                .map_err(|e| fail("set IPV6_V6ONLY", e))?;
        }
        if buffer_bytes > 0 {
            sock.set_recv_buffer_size(buffer_bytes)
                .map_err(|e| fail("set SO_RCVBUF", e))?;
            sock.set_send_buffer_size(buffer_bytes)
                .map_err(|e| fail("set SO_SNDBUF", e))?;
        }
        set_common_options(&sock).map_err(|(opt, e)| fail(&format!("set {opt}"), e))?;
        for (event, what) in [
            (SCTP_ASSOC_CHANGE, "subscribe to SCTP_ASSOC_CHANGE"),
            (SCTP_SHUTDOWN_EVENT, "subscribe to SCTP_SHUTDOWN_EVENT"),
        ] {
            subscribe(sock.as_fd(), event).map_err(|e| {
                NetError::io(
                    format!("{what} (SCTP_EVENT, Linux 5.0 or later) on the listener for {name}"),
                    e,
                )
            })?;
        }
        sock.bind(&SockAddr::from(*first))
            .map_err(|e| NetError::io(format!("bind sctp://{first}"), e))?;
        if !more.is_empty() {
            let mut packed = Vec::new();
            for a in more {
                push_sockaddr(a, &mut packed);
            }
            sys::set_option(
                sock.as_fd(),
                libc::IPPROTO_SCTP,
                SCTP_SOCKOPT_BINDX_ADD,
                &packed,
            )
            .map_err(|e| fail("add the further addresses (sctp_bindx)", e))?;
        }
        sock.listen(i32::try_from(backlog).unwrap_or(i32::MAX))
            .map_err(|e| NetError::io(format!("listen on {name}"), e))?;
        Ok(Self {
            sock,
            notification_continues: AtomicBool::new(false),
        })
    }

    /// Receives one message or notification into `buf` (a message longer than `buf` comes in
    /// parts, see `complete` in [`SctpRecv::Data`]). `WouldBlock` when nothing is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<SctpRecv> {
        let mut control = [0; RECV_CONTROL_LEN];
        let r = sys::recv_msg(self.sock.as_fd(), buf, &mut control, 0)?;
        self.received(r.flags, &control[..r.control_len], &buf[..r.len])
    }

    /// What a receive on this socket made of by other means (io_uring's `recvmsg`, `recvmmsg`)
    /// brought: `flags` (the `msg_flags`), the control messages and the payload it received.
    /// Receives must reach this in the order they were made: a notification's rest is told
    /// from its start by the state kept here.
    pub fn received(&self, flags: i32, control: &[u8], payload: &[u8]) -> io::Result<SctpRecv> {
        let complete = flags & libc::MSG_EOR != 0;
        if flags & libc::MSG_NOTIFICATION != 0 {
            if self
                .notification_continues
                .swap(!complete, Ordering::Relaxed)
            {
                return Ok(SctpRecv::OtherNotification);
            }
            return parse_notification(payload);
        }
        let info = parse_rcvinfo(control).ok_or_else(missing_rcvinfo)?;
        Ok(SctpRecv::Data {
            assoc: SctpAssocId(info.assoc),
            ppid: info.ppid,
            stream: info.stream,
            len: payload.len(),
            complete,
        })
    }

    /// Sends `msg` as one message on association `assoc`, stream `stream`, with PPID `ppid`.
    /// `WouldBlock` when the send buffer is full.
    pub fn send(
        &self,
        assoc: SctpAssocId,
        ppid: u32,
        stream: u16,
        msg: &[u8],
    ) -> io::Result<usize> {
        let control = sndinfo_cmsg(stream, 0, ppid, assoc.0);
        sys::send_msg(self.sock.as_fd(), None, msg, &control, libc::MSG_NOSIGNAL)
    }

    /// Sends `msg` with PPID `ppid` to `to`, over the socket's association with that address or a
    /// new one the kernel sets up (the peer sees `SCTP_COMM_UP`, then the message).
    pub fn send_to(&self, to: SocketAddr, ppid: u32, msg: &[u8]) -> io::Result<usize> {
        let control = sndinfo_cmsg(0, 0, ppid, 0);
        sys::send_msg(
            self.sock.as_fd(),
            Some(&to.into()),
            msg,
            &control,
            libc::MSG_NOSIGNAL,
        )
    }

    /// Aborts association `assoc` (an ABORT chunk to the peer; the association ends at once).
    pub fn abort(&self, assoc: SctpAssocId) -> io::Result<()> {
        let control = sndinfo_cmsg(0, libc::SCTP_ABORT as u16, 0, assoc.0);
        sys::send_msg(self.sock.as_fd(), None, &[], &control, libc::MSG_NOSIGNAL).map(drop)
    }

    /// The peer's addresses on association `assoc` (`SCTP_GET_PEER_ADDRS`).
    pub fn peer_addresses(&self, assoc: SctpAssocId) -> io::Result<Vec<SocketAddr>> {
        // room for 8 IPv6 addresses; grows when the peer has more
        let mut buf = vec![0; 8 + 8 * 28];
        loop {
            put(&mut buf, 0, &assoc.0.to_ne_bytes());
            match sys::get_option(
                self.sock.as_fd(),
                libc::IPPROTO_SCTP,
                SCTP_GET_PEER_ADDRS,
                &mut buf,
            ) {
                Ok(n) => return parse_getaddrs(&buf[..n]),
                Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && buf.len() < 1 << 16 => {
                    buf.resize(buf.len() * 4, 0);
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "cannot get the peer addresses of SCTP association {}: {e}",
                            assoc.0
                        ),
                    ));
                }
            }
        }
    }

    /// The peer's receive window on association `assoc` as this end reckons it (`sstat_rwnd` of
    /// `SCTP_STATUS`): what the peer last advertised less what is in flight to it. 0 when the
    /// peer has stopped reading: messages for it then wait in this socket's send buffer, which
    /// every association of the socket shares.
    pub fn peer_window(&self, assoc: SctpAssocId) -> io::Result<u32> {
        let mut buf = [0; SCTP_STATUS_LEN];
        put(&mut buf, 0, &assoc.0.to_ne_bytes());
        let n = sys::get_option(self.sock.as_fd(), libc::IPPROTO_SCTP, SCTP_STATUS, &mut buf)?;
        field(&buf[..n], SSTAT_RWND)
            .map(u32::from_ne_bytes)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("SCTP_STATUS answered {n} bytes, too few for the peer window"),
                )
            })
    }

    /// Moves association `assoc` onto a socket of its own (`sctp_peeloff`, RFC 6458 §9.2), non-
    /// blocking and close-on-exec, with this socket's options and subscriptions. What the
    /// association had waiting here moves with it. Its own receive and send buffers mean that a
    /// peer which floods or stops reading fills only its own, not those every other association
    /// of this socket shares.
    pub fn peel_off(&self, assoc: SctpAssocId) -> io::Result<Self> {
        let mut arg = [0; PEELOFF_ARG_LEN];
        put(&mut arg, 0, &assoc.0.to_ne_bytes());
        let flags = (libc::O_NONBLOCK | libc::O_CLOEXEC) as u32;
        put(&mut arg, 8, &flags.to_ne_bytes());
        let n = sys::get_option(
            self.sock.as_fd(),
            libc::IPPROTO_SCTP,
            SCTP_SOCKOPT_PEELOFF_FLAGS,
            &mut arg,
        )
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot peel SCTP association {} off its listener: {e}",
                    assoc.0
                ),
            )
        })?;
        let sd = field(&arg[..n], 4).map(i32::from_ne_bytes).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("SCTP_SOCKOPT_PEELOFF_FLAGS answered {n} bytes, too few for a socket"),
            )
        })?;
        Ok(Self {
            sock: Socket::from(sys::created_fd(sd)?),
            notification_continues: AtomicBool::new(false),
        })
    }

    /// Makes `ppid` the payload protocol identifier of every message sent without an
    /// `SCTP_SNDINFO` control message (`SCTP_DEFAULT_SNDINFO`, RFC 6458 §8.1.31): on a
    /// peeled-off association, a plain `send` then carries it, and no control message needs
    /// to be built per message.
    pub fn set_default_ppid(&self, ppid: u32) -> io::Result<()> {
        let cmsg = sndinfo_cmsg(0, 0, ppid, 0);
        let info = &cmsg[super::CMSG_HEADER..super::CMSG_HEADER + size_of::<libc::sctp_sndinfo>()];
        sys::set_option(
            self.sock.as_fd(),
            libc::IPPROTO_SCTP,
            SCTP_DEFAULT_SNDINFO,
            info,
        )
    }

    /// The socket, for what socket2 offers (local address, buffer sizes, busy polling).
    pub fn socket(&self) -> &Socket {
        &self.sock
    }
}

impl AsFd for SctpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for SctpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notification as the kernel lays it out: type, flags, length, then `body`.
    fn notification(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&(8 + body.len() as u32).to_ne_bytes());
        b.extend_from_slice(body);
        b
    }

    fn assoc_change(state: u16, assoc: i32) -> Vec<u8> {
        let mut body = Vec::new();
        for v in [state, 0, 16, 16] {
            body.extend_from_slice(&v.to_ne_bytes());
        }
        body.extend_from_slice(&assoc.to_ne_bytes());
        notification(SCTP_ASSOC_CHANGE, &body)
    }

    #[test]
    fn decodes_association_changes() {
        for (raw, state) in [
            (0, AssocState::CommUp),
            (1, AssocState::CommLost),
            (2, AssocState::Restart),
            (3, AssocState::ShutdownComplete),
            (4, AssocState::CantStartAssoc),
        ] {
            assert_eq!(
                parse_notification(&assoc_change(raw, 77)).unwrap(),
                SctpRecv::AssocChange {
                    assoc: SctpAssocId(77),
                    state
                }
            );
        }
        assert_eq!(
            parse_notification(&assoc_change(9, 77)).unwrap(),
            SctpRecv::OtherNotification
        );
        // sac_info (e.g. the ABORT's causes) may follow
        let mut long = assoc_change(1, -3);
        long.extend_from_slice(&[0xee; 40]);
        long[4..8].copy_from_slice(&60u32.to_ne_bytes());
        assert_eq!(
            parse_notification(&long).unwrap(),
            SctpRecv::AssocChange {
                assoc: SctpAssocId(-3),
                state: AssocState::CommLost
            }
        );
    }

    #[test]
    fn decodes_shutdown_and_ignores_other_notifications() {
        assert_eq!(
            parse_notification(&notification(SCTP_SHUTDOWN_EVENT, &5i32.to_ne_bytes())).unwrap(),
            SctpRecv::Shutdown {
                assoc: SctpAssocId(5)
            }
        );
        // SCTP_PEER_ADDR_CHANGE and an unknown type
        for ty in [0x8002, 0x1234] {
            assert_eq!(
                parse_notification(&notification(ty, &[0; 4])).unwrap(),
                SctpRecv::OtherNotification
            );
        }
    }

    #[test]
    fn refuses_truncated_notifications() {
        let full = assoc_change(0, 1);
        for cut in 0..full.len() {
            let e = parse_notification(&full[..cut]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("bytes it needs"), "{e}");
        }
        // a length field shorter than the structure is not trusted either way
        let mut lying = assoc_change(0, 1);
        lying[4..8].copy_from_slice(&12u32.to_ne_bytes());
        assert!(parse_notification(&lying).is_err());
        let shutdown = notification(SCTP_SHUTDOWN_EVENT, &5i32.to_ne_bytes());
        assert!(parse_notification(&shutdown[..11]).is_err());
        // a length field longer than what arrived: the fields that did arrive are used
        let mut long = assoc_change(3, 8);
        long[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(
            parse_notification(&long).unwrap(),
            SctpRecv::AssocChange {
                assoc: SctpAssocId(8),
                state: AssocState::ShutdownComplete
            }
        );
    }

    #[test]
    fn peer_address_lists_parse_with_bounds_checks() {
        let addrs: Vec<SocketAddr> = vec![
            "192.0.2.1:3863".parse().unwrap(),
            "[2001:db8::1]:3864".parse().unwrap(),
            "[fe80::1%7]:9".parse().unwrap(),
        ];
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&5i32.to_ne_bytes());
        bytes.extend_from_slice(&3u32.to_ne_bytes());
        for a in &addrs {
            push_sockaddr(a, &mut bytes);
        }
        // an IPv4 peer on an IPv6 socket comes as a mapped address
        push_sockaddr(&"[::ffff:198.51.100.7]:5".parse().unwrap(), &mut bytes);
        bytes[4..8].copy_from_slice(&4u32.to_ne_bytes());
        let mut want = addrs.clone();
        want.push("198.51.100.7:5".parse().unwrap());
        assert_eq!(parse_getaddrs(&bytes).unwrap(), want);
        for cut in 0..bytes.len() {
            let e = parse_getaddrs(&bytes[..cut]).unwrap_err();
            assert!(
                e.to_string().starts_with("malformed SCTP_GET_PEER_ADDRS"),
                "{e}"
            );
        }
        // more addresses announced than present, and an unknown family
        bytes[4..8].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse_getaddrs(&bytes).is_err());
        let mut odd = bytes[..8].to_vec();
        odd[4..8].copy_from_slice(&1u32.to_ne_bytes());
        odd.extend_from_slice(&[0x77, 0, 0, 0]);
        assert!(
            parse_getaddrs(&odd)
                .unwrap_err()
                .to_string()
                .contains("family")
        );
    }

    #[test]
    fn listener_needs_an_address() {
        let e = SctpSocket::listen(&[], false, 1, 0).unwrap_err();
        assert!(e.to_string().contains("at least one address"), "{e}");
    }
}
