//! Kernel SCTP (RFC 4960, socket API RFC 6458): the registrar's one-to-many listener with
//! per-message PPID, stream and association id, its notifications, and a one-to-one client for
//! tests and the PE/PU side. The kernel's structures (`sctp_sndinfo`, `sctp_rcvinfo`,
//! `sctp_notification`, `sctp_getaddrs`, `sockaddr_in`/`_in6`) are built and parsed here as byte
//! slices, every field read bounds-checked: lengths inside them are never trusted.

use std::io;
use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{NetError, sys};

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
/// `sctp_assoc_change` notification type.
const SCTP_ASSOC_CHANGE: u16 = 0x8001;
/// `sctp_shutdown_event` notification type.
const SCTP_SHUTDOWN_EVENT: u16 = 0x8005;

/// Streams asked for in each direction (`SCTP_INITMSG`).
const STREAMS: u16 = 16;
/// Room for the `SCTP_RCVINFO` control message of a received message, with spare.
const RECV_CONTROL_LEN: usize = 2 * cmsg_space(size_of::<libc::sctp_rcvinfo>());
/// The length of an `SCTP_SNDINFO` control message.
const SNDINFO_CMSG_LEN: usize = cmsg_space(size_of::<libc::sctp_sndinfo>());
/// Where the data of a control message starts.
const CMSG_HEADER: usize = cmsg_align(size_of::<libc::cmsghdr>());

/// `CMSG_ALIGN`: control messages are aligned to `size_t`.
const fn cmsg_align(len: usize) -> usize {
    (len + size_of::<usize>() - 1) & !(size_of::<usize>() - 1)
}

/// `CMSG_SPACE`: the room one control message with `len` bytes of data takes.
const fn cmsg_space(len: usize) -> usize {
    CMSG_HEADER + cmsg_align(len)
}

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
/// `STREAM`); a kernel without SCTP gives [`NetError::SctpUnavailable`].
fn sctp_socket(v6: bool, ty: Type) -> Result<Socket, NetError> {
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
            ) => NetError::SctpUnavailable { call, source },
            _ => NetError::io(format!("create an SCTP socket ({call})"), source),
        }
    })
}

/// Checks that the kernel can create SCTP sockets (the one-to-many kind the registrar listens on).
pub fn sctp_support() -> Result<(), NetError> {
    sctp_socket(false, Type::SEQPACKET).map(drop)
}

/// Sets an `int` option at level `IPPROTO_SCTP`.
fn set_sctp_int(fd: BorrowedFd<'_>, name: i32, value: i32) -> io::Result<()> {
    sys::set_option(fd, libc::IPPROTO_SCTP, name, &value.to_ne_bytes())
}

/// Sets what every SCTP socket of the registrar needs: `SCTP_NODELAY` (without it small messages
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

/// Subscribes to one notification type for every association of the socket (`SCTP_EVENT` with
/// `struct sctp_event { sctp_assoc_t se_assoc_id; __u16 se_type; __u8 se_on; }`, 8 bytes).
fn subscribe(fd: BorrowedFd<'_>, event: u16) -> io::Result<()> {
    let mut ev = [0; 8];
    put(&mut ev, 0, &libc::SCTP_FUTURE_ASSOC.to_ne_bytes());
    put(&mut ev, 4, &event.to_ne_bytes());
    ev[6] = 1;
    sys::set_option(fd, libc::IPPROTO_SCTP, SCTP_EVENT, &ev)
}

/// Whether `SCTP_NODELAY` is on for the SCTP socket `sock`.
pub fn sctp_nodelay(sock: &impl AsFd) -> io::Result<bool> {
    let mut v = [0; 4];
    let n = sys::get_option(sock.as_fd(), libc::IPPROTO_SCTP, libc::SCTP_NODELAY, &mut v)?;
    Ok(v[..n].iter().any(|&b| b != 0))
}

/// An `SCTP_SNDINFO` control message: send on `stream` with `ppid` and `flags` to `assoc`.
fn sndinfo_cmsg(stream: u16, flags: u16, ppid: u32, assoc: i32) -> [u8; SNDINFO_CMSG_LEN] {
    let mut c = [0; SNDINFO_CMSG_LEN];
    let len = CMSG_HEADER + size_of::<libc::sctp_sndinfo>();
    put(
        &mut c,
        offset_of!(libc::cmsghdr, cmsg_len),
        &len.to_ne_bytes(),
    );
    put(
        &mut c,
        offset_of!(libc::cmsghdr, cmsg_level),
        &libc::IPPROTO_SCTP.to_ne_bytes(),
    );
    put(
        &mut c,
        offset_of!(libc::cmsghdr, cmsg_type),
        &libc::SCTP_SNDINFO.to_ne_bytes(),
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
         socket must have SCTP_RECVRCVINFO on, as SctpSocket::listen and connect_one_to_one set it",
    )
}

/// `N` bytes of `bytes` at `offset`, or `None` if they are not all there.
fn field<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset.checked_add(N)?)?.try_into().ok()
}

/// Copies `value` into `buf` at `offset` (only with offsets of the structures built here).
fn put(buf: &mut [u8], offset: usize, value: &[u8]) {
    buf[offset..offset + value.len()].copy_from_slice(value);
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
/// association changes reported in line as notifications.
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
        let sock = sctp_socket(any_v6, Type::SEQPACKET)?;
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
        let complete = r.flags & libc::MSG_EOR != 0;
        if r.flags & libc::MSG_NOTIFICATION != 0 {
            if self
                .notification_continues
                .swap(!complete, Ordering::Relaxed)
            {
                return Ok(SctpRecv::OtherNotification);
            }
            return parse_notification(&buf[..r.len]);
        }
        let info = parse_rcvinfo(&control[..r.control_len]).ok_or_else(missing_rcvinfo)?;
        Ok(SctpRecv::Data {
            assoc: SctpAssocId(info.assoc),
            ppid: info.ppid,
            stream: info.stream,
            len: r.len,
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

    /// The socket, for what socket2 offers (local address, buffer sizes, busy polling).
    pub fn socket(&self) -> &Socket {
        &self.sock
    }

    /// Opens a one-to-one (`SOCK_STREAM`) SCTP association to `addr`, as a PE or PU does, waiting
    /// up to `timeout` for it to come up. The socket has `SCTP_NODELAY`, `SCTP_RECVRCVINFO` and 16
    /// streams each way, and is returned non-blocking; talk on it with [`send_ppid`] and
    /// [`recv_ppid`].
    pub fn connect_one_to_one(addr: SocketAddr, timeout: Duration) -> Result<Socket, NetError> {
        Self::connect_one_to_one_from(addr, None, timeout)
    }

    /// [`Self::connect_one_to_one`], bound to `source` if given: the association then has that one
    /// local address (on loopback, 127.0.0.2 is another host as far as the peer can tell), where
    /// an unbound client lists all of its own.
    pub fn connect_one_to_one_from(
        addr: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Socket, NetError> {
        let sock = sctp_socket(addr.is_ipv6(), Type::STREAM)?;
        let fail = |what: &str, e| NetError::io(format!("{what} to sctp://{addr}"), e);
        set_common_options(&sock)
            .map_err(|(opt, e)| fail(&format!("set {opt} for a client"), e))?;
        if let Some(ip) = source {
            sock.bind(&SockAddr::from(SocketAddr::new(ip, 0)))
                .map_err(|e| fail(&format!("bind {ip} for an association"), e))?;
        }
        sock.connect_timeout(&SockAddr::from(addr), timeout)
            .map_err(|e| fail("connect", e))?;
        sock.set_nonblocking(true).map_err(|e| {
            NetError::io(
                format!("make the association to sctp://{addr} non-blocking"),
                e,
            )
        })?;
        Ok(sock)
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

/// Sends `msg` as one message with PPID `ppid` on stream `stream` of the one-to-one SCTP socket
/// `sock` (from [`SctpSocket::connect_one_to_one`]).
pub fn send_ppid(sock: &impl AsFd, ppid: u32, stream: u16, msg: &[u8]) -> io::Result<usize> {
    let control = sndinfo_cmsg(stream, 0, ppid, 0);
    sys::send_msg(sock.as_fd(), None, msg, &control, libc::MSG_NOSIGNAL)
}

/// Receives one message from the one-to-one SCTP socket `sock` (which needs `SCTP_RECVRCVINFO`,
/// as [`SctpSocket::connect_one_to_one`] sets it): its length and PPID, or `(0, 0)` when the peer
/// has shut the association down. Notifications are skipped.
pub fn recv_ppid(sock: &impl AsFd, buf: &mut [u8]) -> io::Result<(usize, u32)> {
    loop {
        let mut control = [0; RECV_CONTROL_LEN];
        let r = sys::recv_msg(sock.as_fd(), buf, &mut control, 0)?;
        if r.flags & libc::MSG_NOTIFICATION != 0 {
            continue;
        }
        if r.len == 0 && r.control_len == 0 {
            return Ok((0, 0));
        }
        let info = parse_rcvinfo(&control[..r.control_len]).ok_or_else(missing_rcvinfo)?;
        return Ok((r.len, info.ppid));
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
                let e = SctpSocket::connect_one_to_one(
                    "[::1]:9".parse().unwrap(),
                    Duration::from_secs(1),
                )
                .unwrap_err();
                assert!(
                    e.to_string().contains("socket(AF_INET6, SOCK_STREAM"),
                    "{e}"
                );
            }
            Err(e) => panic!("{e}"),
        }
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
