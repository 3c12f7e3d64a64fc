//! The unsafe boundary of the io_uring driver: one worker's ring, its provided-buffer ring and the
//! operations the driver submits, behind a safe interface.
//!
//! Every piece of memory the kernel reads or writes for an operation is owned here and stays in
//! place until that operation's last completion: the receive buffers (an `mmap`ed buffer ring and
//! buffer area), the buffer, address and SCTP header of every send (boxed in `sends`), the
//! `msghdr`s of the multishot `recvmsg`s. A receive buffer the kernel filled is handed out as a [`Buf`] token that
//! must come back through [`Ring::recycle`] before the kernel may use it again. Dropping the ring
//! cancels and reaps every operation in flight before anything is freed, and leaks that memory
//! instead if the kernel does not finish in time.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};
use rserpool_net::{
    SCTP_RECV_CONTROL_LEN, SCTP_SEND_CONTROL_LEN, UDP_SEGMENT_CONTROL_LEN, udp_segment_control,
};
use socket2::SockAddr;

/// The buffer group of the provided-buffer ring (one ring per worker, so one group each).
const BUFFER_GROUP: u16 = 0;
/// The operation kind sits in the top byte of the user data, the driver's token below it.
const KIND_SHIFT: u32 = 56;
const TOKEN_MASK: u64 = (1 << KIND_SHIFT) - 1;
/// How long dropping the ring waits for cancelled operations to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The largest token the driver may give an operation.
pub(super) const MAX_TOKEN: u64 = TOKEN_MASK;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Accept = 1,
    Recv,
    RecvMsg,
    Poll,
    Send,
    SendTo,
    Cancel,
    Writable,
    SctpRecv,
    SctpSend,
}

impl Kind {
    fn of(user_data: u64) -> Option<Self> {
        Some(match user_data >> KIND_SHIFT {
            1 => Self::Accept,
            2 => Self::Recv,
            3 => Self::RecvMsg,
            4 => Self::Poll,
            5 => Self::Send,
            6 => Self::SendTo,
            7 => Self::Cancel,
            8 => Self::Writable,
            9 => Self::SctpRecv,
            10 => Self::SctpSend,
            _ => return None,
        })
    }

    fn user_data(self, token: u64) -> u64 {
        ((self as u64) << KIND_SHIFT) | (token & TOKEN_MASK)
    }
}

/// A receive buffer the kernel filled and handed over. Read it with [`Ring::bytes`] or
/// [`Ring::datagram`]; give it back with [`Ring::recycle`] (until then the kernel cannot reuse it).
#[must_use = "a buffer not recycled is lost to the ring"]
#[derive(Debug)]
pub(super) struct Buf {
    bid: u16,
    len: usize,
}

/// A send in flight, to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SendId(usize);

/// What one completion reports. `more`: a multishot operation stays armed (without it, it ended
/// and must be submitted again to go on).
#[derive(Debug)]
pub(super) enum Completion {
    /// A multishot accept: a new connection, or why none came.
    Accept {
        token: u64,
        result: io::Result<OwnedFd>,
        more: bool,
    },
    /// A multishot stream receive: bytes, the end of the stream (`None`), or an error
    /// (`ENOBUFS` when the buffer ring ran dry).
    Recv {
        token: u64,
        result: io::Result<Option<Buf>>,
        more: bool,
    },
    /// A multishot `recvmsg`: one datagram (read it with [`Ring::datagram`]) or an error.
    Datagram {
        token: u64,
        result: io::Result<Buf>,
        more: bool,
    },
    /// A multishot poll: the ready events.
    Poll {
        token: u64,
        result: io::Result<u32>,
        more: bool,
    },
    /// A stream send ended: its buffer comes back with the offset the send started at.
    Sent {
        token: u64,
        result: io::Result<usize>,
        buf: Vec<u8>,
        from: usize,
    },
    /// A datagram send ended.
    SentTo { result: io::Result<usize> },
    /// A one-shot poll for writability ended: a connection in progress completed, failed, or
    /// the poll was cancelled (the socket tells which).
    Writable { token: u64 },
    /// A multishot SCTP receive: one message, notification or part of one (read it with
    /// [`Ring::sctp_message`]), the end of a one-to-one socket's stream (`None`: its association
    /// has ended), or an error.
    SctpMessage {
        token: u64,
        result: io::Result<Option<Buf>>,
        more: bool,
    },
    /// An SCTP send ended; the message's buffer comes back (to be sent again if the socket's
    /// send buffer was full).
    SctpSent {
        token: u64,
        result: io::Result<usize>,
        buf: Vec<u8>,
    },
}

/// What an SCTP receive brought, as `recvmsg` reports it.
pub(super) struct SctpMessage<'a> {
    /// `msg_flags`: `MSG_EOR`, `MSG_NOTIFICATION`, `MSG_CTRUNC`.
    pub flags: i32,
    /// The control messages (`SCTP_RCVINFO`).
    pub control: &'a [u8],
    /// The message, notification, or part of one.
    pub payload: &'a [u8],
}

/// The header of a `sendmsg`: it names the data and the control message beside it in the same
/// box (an SCTP send's `SCTP_SNDINFO`, or a UDP GSO send's `UDP_SEGMENT` with its address).
struct SctpHeader {
    msghdr: libc::msghdr,
    iov: libc::iovec,
    control: [u8; SCTP_SEND_CONTROL_LEN],
}

impl Default for SctpHeader {
    fn default() -> Self {
        // SAFETY: msghdr and iovec are plain old data; all zeroes is "nothing" for both.
        let (msghdr, iov) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        Self {
            msghdr,
            iov,
            control: [0; SCTP_SEND_CONTROL_LEN],
        }
    }
}

impl std::fmt::Debug for SctpHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SctpHeader").finish_non_exhaustive()
    }
}

/// A send's memory: the bytes, where they start, for a datagram the destination, for an SCTP
/// message on a one-to-many socket the `sendmsg` header.
#[derive(Debug, Default)]
struct Outgoing {
    buf: Vec<u8>,
    from: usize,
    to: Option<SockAddr>,
    token: u64,
    sctp: SctpHeader,
}

/// One worker's io_uring.
pub(super) struct Ring {
    ring: IoUring,
    bufs: Option<BufRing>,
    /// Sends in flight by [`SendId`]; boxed so that the address the kernel reads stays put.
    sends: Vec<Option<Box<Outgoing>>>,
    free_sends: Vec<usize>,
    #[allow(
        clippy::vec_box,
        reason = "boxes of finished sends, reused so that a send allocates nothing"
    )]
    spare_sends: Vec<Box<Outgoing>>,
    spare_datagrams: Vec<Vec<u8>>,
    /// The header of the multishot `recvmsg` of datagrams: room for an IPv4 or IPv6 source
    /// address.
    msghdr: Box<libc::msghdr>,
    /// The header of the multishot `recvmsg` of SCTP messages: room for their control messages,
    /// no address (the association id in `SCTP_RCVINFO` tells the sender).
    sctp_msghdr: Box<libc::msghdr>,
    /// Operations submitted (or queued) whose last completion has not been reaped.
    in_flight: usize,
    deferred: bool,
}

impl Ring {
    /// A ring of `sq_entries` submission entries (and a completion queue at least four times as
    /// large) with `buffer_count` provided receive buffers of `buffer_size` bytes.
    ///
    /// Sets `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (completions are produced
    /// only when this thread waits for them), or `IORING_SETUP_COOP_TASKRUN` where the kernel
    /// refuses those.
    pub fn new(sq_entries: u32, buffer_count: u32, buffer_size: usize) -> io::Result<Self> {
        let count = u16::try_from(buffer_count)
            .ok()
            .filter(|c| c.is_power_of_two())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{buffer_count} receive buffers: a power of two up to 32768 is needed"),
                )
            })?;
        let cq_entries = sq_entries
            .saturating_mul(4)
            .max(buffer_count.saturating_mul(2))
            .next_power_of_two()
            .min(1 << 16);
        let mut builder: io_uring::Builder = IoUring::builder();
        builder
            .setup_cqsize(cq_entries)
            .setup_single_issuer()
            .setup_defer_taskrun();
        let (ring, deferred) = match builder.build(sq_entries) {
            Ok(ring) => (ring, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let mut builder: io_uring::Builder = IoUring::builder();
                builder
                    .setup_cqsize(cq_entries)
                    .setup_coop_taskrun()
                    .setup_taskrun_flag();
                (builder.build(sq_entries)?, false)
            }
            Err(e) => return Err(e),
        };
        let bufs = BufRing::new(&ring, count, buffer_size)?;
        // SAFETY: msghdr is plain old data; all zeroes is "no name, no control, no data".
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msghdr.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        // SAFETY: as above.
        let mut sctp_msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        sctp_msghdr.msg_controllen = SCTP_RECV_CONTROL_LEN as _;
        Ok(Self {
            ring,
            bufs: Some(bufs),
            sends: Vec::new(),
            free_sends: Vec::new(),
            spare_sends: Vec::new(),
            spare_datagrams: Vec::new(),
            msghdr,
            sctp_msghdr,
            in_flight: 0,
            deferred,
        })
    }

    /// Whether the ring runs with `IORING_SETUP_DEFER_TASKRUN` (else the cooperative fallback).
    pub fn deferred_taskrun(&self) -> bool {
        self.deferred
    }

    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry comes from this module's methods, and all the memory it names
            // (receive buffers, a boxed send buffer with its address or SCTP header, the boxed
            // msghdrs) belongs to this
            // ring and stays in place until the operation's last completion is reaped; `Drop`
            // reaps every operation (or leaks that memory) before freeing it.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                self.in_flight += 1;
                return Ok(());
            }
            // The submission queue is full: hand it to the kernel, then queue again.
            if self.ring.submit()? == 0 {
                return Err(io::Error::other(
                    "the io_uring submission queue does not drain",
                ));
            }
        }
    }

    /// Accepts connections on a listening socket until cancelled (multishot accept; new sockets
    /// are close-on-exec). The socket must stay open until the last completion.
    pub fn accept(&mut self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let entry = opcode::AcceptMulti::new(Fd(fd.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(Kind::Accept.user_data(token));
        self.push(entry)
    }

    /// Receives on a stream socket into provided buffers until the end of the stream, an error,
    /// or a cancel (multishot receive).
    pub fn recv(&mut self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let entry = opcode::RecvMulti::new(Fd(fd.as_raw_fd()), BUFFER_GROUP)
            .build()
            .user_data(Kind::Recv.user_data(token));
        self.push(entry)
    }

    /// Receives datagrams with their source addresses into provided buffers (multishot
    /// `recvmsg`).
    pub fn recv_datagrams(&mut self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let entry = opcode::RecvMsgMulti::new(Fd(fd.as_raw_fd()), &*self.msghdr, BUFFER_GROUP)
            .build()
            .user_data(Kind::RecvMsg.user_data(token));
        self.push(entry)
    }

    /// Receives SCTP messages and notifications with their control messages into provided
    /// buffers (multishot `recvmsg`), one completion each, until an error or a cancel.
    pub fn recv_sctp(&mut self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let entry = opcode::RecvMsgMulti::new(Fd(fd.as_raw_fd()), &*self.sctp_msghdr, BUFFER_GROUP)
            .build()
            .user_data(Kind::SctpRecv.user_data(token));
        self.push(entry)
    }

    /// Reports each time `fd` becomes readable (multishot poll).
    pub fn poll_readable(&mut self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let entry = opcode::PollAdd::new(Fd(fd.as_raw_fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(Kind::Poll.user_data(token));
        self.push(entry)
    }

    /// Reports once when `fd` becomes writable (or fails): how a non-blocking connect ends.
    pub fn poll_writable(&mut self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let entry = opcode::PollAdd::new(Fd(fd.as_raw_fd()), libc::POLLOUT as u32)
            .build()
            .user_data(Kind::Writable.user_data(token));
        self.push(entry)
    }

    /// Cancels the stream receive armed with `token`.
    pub fn cancel_recv(&mut self, token: u64) -> io::Result<()> {
        self.cancel(CancelBuilder::user_data(Kind::Recv.user_data(token)))
    }

    /// Cancels a send in flight.
    pub fn cancel_send(&mut self, id: SendId) -> io::Result<()> {
        self.cancel(CancelBuilder::user_data(Kind::Send.user_data(id.0 as u64)))
    }

    /// Cancels every operation on `fd`.
    pub fn cancel_fd(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.cancel(CancelBuilder::fd(Fd(fd.as_raw_fd())).all())
    }

    fn cancel(&mut self, what: CancelBuilder) -> io::Result<()> {
        let entry = opcode::AsyncCancel2::new(what)
            .build()
            .user_data(Kind::Cancel.user_data(0));
        self.push(entry)
    }

    fn store_send(&mut self, out: Box<Outgoing>) -> (usize, *const u8, u32, &Outgoing) {
        let id = match self.free_sends.pop() {
            Some(id) => id,
            None => {
                self.sends.push(None);
                self.sends.len() - 1
            }
        };
        let out = &**self.sends[id].insert(out);
        let bytes = &out.buf[out.from.min(out.buf.len())..];
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        (id, bytes.as_ptr(), len, out)
    }

    /// Sends `buf[from..]` on a stream socket; the buffer comes back with the completion. Like a
    /// non-blocking `send`, it takes what fits now and reports that count; unlike one, when
    /// nothing fits it waits for room instead of failing with `EAGAIN`.
    pub fn send(
        &mut self,
        fd: BorrowedFd<'_>,
        buf: Vec<u8>,
        from: usize,
        token: u64,
    ) -> io::Result<SendId> {
        let mut out = self.spare_sends.pop().unwrap_or_default();
        out.buf = buf;
        out.from = from;
        out.to = None;
        out.token = token;
        let (id, ptr, len, _) = self.store_send(out);
        let entry = opcode::Send::new(Fd(fd.as_raw_fd()), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(Kind::Send.user_data(id as u64));
        self.push(entry)?;
        Ok(SendId(id))
    }

    /// Sends a copy of `bytes` as one datagram to `to` from an unbound-peer UDP socket. Never
    /// waits for room: a full socket buffer drops it (UDP is best effort), as a non-blocking
    /// `sendto` would.
    pub fn send_to(&mut self, fd: BorrowedFd<'_>, bytes: &[u8], to: SocketAddr) -> io::Result<()> {
        let mut out = self.spare_sends.pop().unwrap_or_default();
        let mut buf = self.spare_datagrams.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        out.buf = buf;
        out.from = 0;
        out.to = Some(SockAddr::from(to));
        out.token = 0;
        let (id, ptr, len, out) = self.store_send(out);
        let (addr, addr_len) = match &out.to {
            Some(a) => (a.as_ptr().cast::<libc::sockaddr>(), a.len()),
            None => (std::ptr::null(), 0),
        };
        let entry = opcode::Send::new(Fd(fd.as_raw_fd()), ptr, len)
            .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            .dest_addr(addr)
            .dest_addr_len(addr_len)
            .build()
            .user_data(Kind::SendTo.user_data(id as u64));
        self.push(entry)
    }

    /// Sends `bytes` to `to` from the UDP socket `fd` as datagrams of `segment` bytes each, the
    /// last one shorter (UDP GSO: a `sendmsg` with a `UDP_SEGMENT` control message); the bytes
    /// are copied. Never waits for room.
    pub fn send_to_segmented(
        &mut self,
        fd: BorrowedFd<'_>,
        bytes: &[u8],
        to: SocketAddr,
        segment: u16,
    ) -> io::Result<()> {
        const { assert!(UDP_SEGMENT_CONTROL_LEN <= SCTP_SEND_CONTROL_LEN) };
        let mut out = self.spare_sends.pop().unwrap_or_default();
        let mut buf = self.spare_datagrams.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        out.buf = buf;
        out.from = 0;
        out.to = Some(SockAddr::from(to));
        out.token = 0;
        out.sctp.control[..UDP_SEGMENT_CONTROL_LEN].copy_from_slice(&udp_segment_control(segment));
        let id = match self.free_sends.pop() {
            Some(id) => id,
            None => {
                self.sends.push(None);
                self.sends.len() - 1
            }
        };
        let out = &mut **self.sends[id].insert(out);
        let (name, name_len) = match &out.to {
            Some(a) => (a.as_ptr().cast_mut().cast(), a.len()),
            None => (std::ptr::null_mut(), 0),
        };
        let h = &mut out.sctp;
        h.iov.iov_base = out.buf.as_mut_ptr().cast();
        h.iov.iov_len = out.buf.len();
        h.msghdr.msg_name = name;
        h.msghdr.msg_namelen = name_len;
        h.msghdr.msg_iov = &raw mut h.iov;
        h.msghdr.msg_iovlen = 1;
        h.msghdr.msg_control = h.control.as_mut_ptr().cast();
        h.msghdr.msg_controllen = UDP_SEGMENT_CONTROL_LEN as _;
        let entry = opcode::SendMsg::new(Fd(fd.as_raw_fd()), &raw const h.msghdr)
            .flags((libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as u32)
            .build()
            .user_data(Kind::SendTo.user_data(id as u64));
        self.push(entry)
    }

    /// Sends `buf` as one SCTP message on `fd`: with `control` (an `SCTP_SNDINFO` naming the
    /// association and PPID, for a one-to-many socket) as a `sendmsg`, else as a plain `send`
    /// (a peeled-off association whose default PPID is set). Never waits for room
    /// (`MSG_DONTWAIT`): a full send buffer fails it with `EAGAIN`, and the buffer comes back
    /// with the completion either way. Sends on one socket are issued in the order they are
    /// queued.
    pub fn send_sctp(
        &mut self,
        fd: BorrowedFd<'_>,
        control: Option<[u8; SCTP_SEND_CONTROL_LEN]>,
        buf: Vec<u8>,
        token: u64,
    ) -> io::Result<()> {
        let mut out = self.spare_sends.pop().unwrap_or_default();
        out.buf = buf;
        out.from = 0;
        out.to = None;
        out.token = token;
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        let entry = match control {
            None => {
                let (id, ptr, len, _) = self.store_send(out);
                opcode::Send::new(Fd(fd.as_raw_fd()), ptr, len)
                    .flags(flags)
                    .build()
                    .user_data(Kind::SctpSend.user_data(id as u64))
            }
            Some(control) => {
                out.sctp.control = control;
                let id = match self.free_sends.pop() {
                    Some(id) => id,
                    None => {
                        self.sends.push(None);
                        self.sends.len() - 1
                    }
                };
                let out = &mut **self.sends[id].insert(out);
                let h = &mut out.sctp;
                h.iov.iov_base = out.buf.as_mut_ptr().cast();
                h.iov.iov_len = out.buf.len();
                // No address (a reused header may hold one of a UDP GSO send).
                h.msghdr.msg_name = std::ptr::null_mut();
                h.msghdr.msg_namelen = 0;
                h.msghdr.msg_iov = &raw mut h.iov;
                h.msghdr.msg_iovlen = 1;
                h.msghdr.msg_control = h.control.as_mut_ptr().cast();
                h.msghdr.msg_controllen = SCTP_SEND_CONTROL_LEN as _;
                opcode::SendMsg::new(Fd(fd.as_raw_fd()), &raw const h.msghdr)
                    .flags(flags as u32)
                    .build()
                    .user_data(Kind::SctpSend.user_data(id as u64))
            }
        };
        self.push(entry)
    }

    /// Submits what is queued without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        self.ring.submit().map(drop)
    }

    /// Submits what is queued and waits up to `timeout` for a completion (not at all when one is
    /// there). One system call; with deferred task running, this is where completions appear.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Whether completions wait to be reaped.
    pub fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// The next completion, if any.
    pub fn next(&mut self) -> Option<Completion> {
        loop {
            let cqe = self.ring.completion().next()?;
            let (user_data, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
            let more = cqueue::more(flags);
            if !more {
                self.in_flight -= 1;
            }
            let token = user_data & TOKEN_MASK;
            let buf = cqueue::buffer_select(flags).map(|bid| Buf {
                bid,
                len: usize::try_from(res).unwrap_or(0),
            });
            let Some(kind) = Kind::of(user_data) else {
                continue;
            };
            return Some(match kind {
                Kind::Accept => Completion::Accept {
                    token,
                    // SAFETY: a non-negative result of accept is a file descriptor the kernel
                    // just installed in this process for the new connection; nothing else owns
                    // it.
                    result: outcome(res).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) }),
                    more,
                },
                Kind::Recv => Completion::Recv {
                    token,
                    result: match (outcome(res), buf) {
                        (Ok(n), Some(buf)) if n > 0 => Ok(Some(buf)),
                        (result, buf) => {
                            if let Some(buf) = buf {
                                self.recycle(buf);
                            }
                            result.map(|_| None)
                        }
                    },
                    more,
                },
                Kind::RecvMsg => Completion::Datagram {
                    token,
                    result: match (outcome(res), buf) {
                        (Ok(_), Some(buf)) => Ok(buf),
                        (result, buf) => {
                            if let Some(buf) = buf {
                                self.recycle(buf);
                            }
                            result.and(Err(io::Error::other("a datagram without a buffer")))
                        }
                    },
                    more,
                },
                Kind::Poll => Completion::Poll {
                    token,
                    result: outcome(res).map(|events| events as u32),
                    more,
                },
                Kind::Writable => Completion::Writable { token },
                Kind::SctpRecv => Completion::SctpMessage {
                    token,
                    result: match (outcome(res), buf) {
                        (Ok(_), Some(buf)) => Ok(Some(buf)),
                        (result, buf) => {
                            if let Some(buf) = buf {
                                self.recycle(buf);
                            }
                            result.map(|_| None)
                        }
                    },
                    more,
                },
                Kind::Send | Kind::SendTo | Kind::SctpSend => {
                    let id = token as usize;
                    let Some(mut out) = self.sends.get_mut(id).and_then(Option::take) else {
                        continue;
                    };
                    self.free_sends.push(id);
                    let buf = std::mem::take(&mut out.buf);
                    let (from, token) = (out.from, out.token);
                    out.to = None;
                    self.spare_sends.push(out);
                    if kind == Kind::SendTo {
                        self.spare_datagrams.push(buf);
                        Completion::SentTo {
                            result: outcome(res),
                        }
                    } else if kind == Kind::SctpSend {
                        Completion::SctpSent {
                            token,
                            result: outcome(res),
                            buf,
                        }
                    } else {
                        Completion::Sent {
                            token,
                            result: outcome(res),
                            buf,
                            from,
                        }
                    }
                }
                Kind::Cancel => continue,
            });
        }
    }

    /// The bytes the kernel received into `buf`.
    pub fn bytes(&self, buf: &Buf) -> &[u8] {
        match &self.bufs {
            Some(bufs) => bufs.bytes(buf),
            None => &[],
        }
    }

    /// The source and payload of a datagram received into `buf` by [`Ring::recv_datagrams`];
    /// `None` if the source is not an IP address.
    pub fn datagram(&self, buf: &Buf) -> Option<(SocketAddr, &[u8])> {
        let bytes = self.bytes(buf);
        let out = RecvMsgOut::parse(bytes, &self.msghdr).ok()?;
        let from = socket_addr(out.name_data())?;
        // `RecvMsgOut` lends the payload only for its own lifetime: find it in `bytes` again.
        let payload = out.payload_data();
        let start = payload.as_ptr() as usize - bytes.as_ptr() as usize;
        Some((from, &bytes[start..start + payload.len()]))
    }

    /// The flags, control messages and payload an SCTP receive ([`Ring::recv_sctp`]) put in
    /// `buf`; `None` if the kernel's header does not fit the buffer.
    pub fn sctp_message(&self, buf: &Buf) -> Option<SctpMessage<'_>> {
        let bytes = self.bytes(buf);
        let out = RecvMsgOut::parse(bytes, &self.sctp_msghdr).ok()?;
        // `RecvMsgOut` lends its slices only for its own lifetime: find them in `bytes` again.
        let within = |part: &[u8]| {
            let start = part.as_ptr() as usize - bytes.as_ptr() as usize;
            start..start + part.len()
        };
        let (control, payload) = (within(out.control_data()), within(out.payload_data()));
        Some(SctpMessage {
            flags: out.flags() as i32,
            control: &bytes[control],
            payload: &bytes[payload],
        })
    }

    /// Gives a buffer back to the kernel.
    pub fn recycle(&mut self, buf: Buf) {
        if let Some(bufs) = &mut self.bufs {
            bufs.recycle(buf);
        }
    }

    /// Cancels everything in flight and reaps it; false if the kernel did not finish in time.
    fn drain(&mut self) -> bool {
        if self.cancel(CancelBuilder::any()).is_err() {
            return false;
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.in_flight > 0 && Instant::now() < deadline {
            if self.submit_and_wait(Duration::from_millis(10)).is_err() {
                return false;
            }
            while let Some(c) = self.next() {
                match c {
                    Completion::Recv {
                        result: Ok(Some(buf)),
                        ..
                    }
                    | Completion::Datagram {
                        result: Ok(buf), ..
                    }
                    | Completion::SctpMessage {
                        result: Ok(Some(buf)),
                        ..
                    } => self.recycle(buf),
                    _ => {}
                }
            }
        }
        self.in_flight == 0
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.drain() {
            let _ = self.ring.submitter().unregister_buf_ring(BUFFER_GROUP);
            return;
        }
        tracing::warn!(
            operations = self.in_flight,
            "io_uring operations did not finish after a cancel; leaking their buffers"
        );
        std::mem::forget(self.bufs.take());
        std::mem::forget(std::mem::take(&mut self.sends));
        for msghdr in [&mut self.msghdr, &mut self.sctp_msghdr] {
            std::mem::forget(std::mem::replace(
                msghdr,
                // SAFETY: msghdr is plain old data; all zeroes is a valid value.
                Box::new(unsafe { std::mem::zeroed() }),
            ));
        }
    }
}

/// A completion's result: a count (or file descriptor), or the error the kernel reported.
fn outcome(res: i32) -> io::Result<usize> {
    usize::try_from(res).map_err(|_| io::Error::from_raw_os_error(-res))
}

/// A socket address from the bytes of a `sockaddr_in` or `sockaddr_in6`.
fn socket_addr(name: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(name.get(0..2)?.try_into().ok()?));
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddrV4::new(Ipv4Addr::from(ip), port).into())
        }
        libc::AF_INET6 => {
            let flow = u32::from_be_bytes(name.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope).into())
        }
        _ => None,
    }
}

/// `struct io_uring_buf`: one entry of a provided-buffer ring. The `resv` field of entry 0 is the
/// ring's tail.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(size_of::<RawBuf>() == size_of::<io_uring::types::BufRingEntry>());

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize, populate: bool) -> io::Result<Self> {
        let flags =
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: an anonymous mapping at an address the kernel picks aliases no Rust memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` describe a mapping this value created and nobody else unmaps.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The provided-buffer ring of one buffer group: `count` entries, and `count` buffers of `size`
/// bytes in one mapping. The kernel takes buffers from the head; recycled ones go in at the tail.
struct BufRing {
    entries: Mapping,
    memory: Mapping,
    count: u16,
    size: usize,
    tail: u16,
}

impl BufRing {
    /// Maps the entries and the buffers, hands every buffer to the kernel and registers the ring
    /// with `ring` as [`BUFFER_GROUP`].
    fn new(ring: &IoUring, count: u16, size: usize) -> io::Result<Self> {
        let entries = Mapping::new(usize::from(count) * size_of::<RawBuf>(), true)?;
        let memory = Mapping::new(usize::from(count) * size, false)?;
        let mut bufs = Self {
            entries,
            memory,
            count,
            size,
            tail: 0,
        };
        for bid in 0..count {
            bufs.put(bid);
        }
        bufs.publish();
        let len = u32::try_from(size).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "receive buffers over 4 GiB")
        })?;
        debug_assert!(len > 0);
        // SAFETY: the entries mapping holds `count` entries, is page-aligned (mmap), and lives as
        // long as the registration: `Ring` unregisters the group, or leaks this value, before it
        // is dropped.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.entries.ptr.as_ptr() as u64,
                count,
                BUFFER_GROUP,
                0,
            )?;
        }
        Ok(bufs)
    }

    /// Writes buffer `bid` into the entry at the local tail (not yet visible to the kernel).
    fn put(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        let addr = self.memory.ptr.as_ptr() as u64 + u64::from(bid) * self.size as u64;
        let entry = self.entries.ptr.as_ptr().cast::<RawBuf>();
        // SAFETY: `index < count`, so the entry lies inside the mapping. The kernel reads only
        // entries between its head and the published tail; this one is past the tail (the kernel
        // has consumed it, since at most `count` buffers exist). The fields are written through
        // raw pointers so that entry 0's `resv`, the tail the kernel reads, is not touched.
        unsafe {
            let e = entry.add(index);
            std::ptr::addr_of_mut!((*e).addr).write(addr);
            std::ptr::addr_of_mut!((*e).len).write(self.size as u32);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the entries written so far visible to the kernel.
    fn publish(&self) {
        let entry = self.entries.ptr.as_ptr().cast::<RawBuf>();
        // SAFETY: entry 0's `resv` field is the ring's tail, a naturally aligned u16 inside the
        // mapping that the kernel reads atomically; the Release store orders the entries written
        // before it.
        let tail = unsafe { AtomicU16::from_ptr(std::ptr::addr_of_mut!((*entry).resv)) };
        tail.store(self.tail, Ordering::Release);
    }

    fn bytes(&self, buf: &Buf) -> &[u8] {
        assert!(buf.bid < self.count, "buffer id {} out of range", buf.bid);
        let len = buf.len.min(self.size);
        // SAFETY: buffer `bid` lies inside the mapping and `len` within the buffer. The kernel
        // handed it over in a completion and does not write it until `recycle` consumes the
        // `Buf`, which needs `&mut self` and so cannot happen while this borrow lives.
        unsafe {
            std::slice::from_raw_parts(
                self.memory
                    .ptr
                    .as_ptr()
                    .add(usize::from(buf.bid) * self.size),
                len,
            )
        }
    }

    fn recycle(&mut self, buf: Buf) {
        self.put(buf.bid);
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_parse_from_kernel_bytes() {
        let v4: SocketAddr = "192.0.2.7:3863".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        for addr in [v4, v6] {
            let raw = SockAddr::from(addr);
            // SAFETY: `raw` holds `len` initialised bytes of its storage.
            let bytes = unsafe {
                std::slice::from_raw_parts(raw.as_ptr().cast::<u8>(), raw.len() as usize)
            };
            assert_eq!(socket_addr(bytes), Some(addr));
        }
        assert_eq!(socket_addr(&[0; 3]), None);
    }

    #[test]
    fn buffers_received_come_back_and_sends_return_their_buffer() {
        let mut ring = Ring::new(8, 4, 256).unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::os::fd::AsFd;
        ring.recv(b.as_fd(), 7).unwrap();
        // More messages than buffers: each is recycled before the next arrives.
        for round in 0..10u8 {
            let id = ring.send(a.as_fd(), vec![round; 100], 40, 3).unwrap();
            assert!(id.0 < 2, "send slots are reused");
            let mut sent = false;
            let mut received = Vec::new();
            while !(sent && received.len() == 60) {
                ring.submit_and_wait(Duration::from_secs(5)).unwrap();
                while let Some(c) = ring.next() {
                    match c {
                        Completion::Sent {
                            token,
                            result,
                            buf,
                            from,
                        } => {
                            assert_eq!((token, result.unwrap(), buf.len(), from), (3, 60, 100, 40));
                            sent = true;
                        }
                        Completion::Recv {
                            token,
                            result: Ok(Some(buf)),
                            more,
                        } => {
                            assert_eq!(token, 7);
                            assert!(more);
                            received.extend_from_slice(ring.bytes(&buf));
                            ring.recycle(buf);
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            assert_eq!(received, vec![round; 60]);
        }
        drop(a);
        let mut end = None;
        while end.is_none() {
            ring.submit_and_wait(Duration::from_secs(5)).unwrap();
            if let Some(Completion::Recv { result, more, .. }) = ring.next() {
                end = Some((result.unwrap().is_none(), more));
            }
        }
        assert_eq!(
            end,
            Some((true, false)),
            "the end of the stream ends the receive"
        );
        assert_eq!(ring.in_flight, 0);
    }

    /// The driver's sockets are non-blocking: a send takes what fits (a short count, as a
    /// non-blocking `send` would), and a send to a full socket waits for room instead of failing
    /// with `EAGAIN`.
    #[test]
    fn a_send_to_a_full_non_blocking_socket_waits_for_the_peer() {
        use socket2::{Domain, Socket, Type};
        use std::io::Read;
        use std::os::fd::AsFd;
        let small = |s: &Socket| {
            s.set_recv_buffer_size(1 << 16).unwrap();
            s.set_send_buffer_size(1 << 16).unwrap();
        };
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        small(&listener);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        listener.bind(&any.into()).unwrap();
        listener.listen(1).unwrap();
        let sender = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        small(&sender);
        sender.connect(&listener.local_addr().unwrap()).unwrap();
        sender.set_nonblocking(true).unwrap();
        let (peer, _) = listener.accept().unwrap();
        let mut ring = Ring::new(8, 4, 256).unwrap();
        const LEN: usize = 8 << 20;
        let mut sent = 0;
        let mut rounds = 0;
        // Short sends fill the buffers; then one stays in flight.
        let waiting = loop {
            rounds += 1;
            assert!(rounds < 100, "the sends never filled the socket");
            ring.send(sender.as_fd(), vec![7; LEN], sent, 1).unwrap();
            ring.submit_and_wait(Duration::from_millis(300)).unwrap();
            match ring.next() {
                None => break LEN - sent,
                Some(Completion::Sent { result, .. }) => {
                    let n = result.expect("a send to a full socket fails");
                    assert!(n > 0 && sent + n < LEN, "{n} bytes sent after {sent}");
                    sent += n;
                }
                Some(other) => panic!("unexpected {other:?}"),
            }
        };
        assert!(waiting > 0);
        let reader = std::thread::spawn(move || {
            let mut peer = std::net::TcpStream::from(peer);
            let mut all = Vec::new();
            peer.read_to_end(&mut all).unwrap();
            all.len()
        });
        loop {
            ring.submit_and_wait(Duration::from_secs(5)).unwrap();
            if let Some(Completion::Sent { result, .. }) = ring.next() {
                let n = result.unwrap();
                assert!(n > 0 && n <= waiting, "{n} of {waiting}");
                sent += n;
                break;
            }
        }
        drop(ring);
        drop(sender);
        assert_eq!(reader.join().unwrap(), sent);
    }

    /// A Unix `SEQPACKET` pair stands in for a peeled-off SCTP association (message boundaries;
    /// the host has no kernel SCTP; the SCTP sockets themselves are tested in user-mode Linux):
    /// sends that find the buffer full fail at once and give their bytes back, the ones before
    /// them arrive whole and in order through the multishot receive.
    #[test]
    fn sctp_sends_never_wait_and_arrive_in_order() {
        use socket2::{Domain, Socket, Type};
        use std::os::fd::AsFd;
        let (sender, receiver) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        sender.set_nonblocking(true).unwrap();
        receiver.set_nonblocking(true).unwrap();
        let mut ring = Ring::new(64, 8, 1000 + 128).unwrap();
        const MESSAGES: u64 = 200;
        for i in 0..MESSAGES {
            ring.send_sctp(sender.as_fd(), None, vec![i as u8; 1000], i)
                .unwrap();
        }
        ring.submit_and_wait(Duration::from_millis(100)).unwrap();
        let mut outcomes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while outcomes.len() < MESSAGES as usize && Instant::now() < deadline {
            match ring.next() {
                Some(Completion::SctpSent { token, result, buf }) => {
                    assert_eq!(
                        buf,
                        vec![token as u8; 1000],
                        "the message's bytes come back"
                    );
                    outcomes.push((token, result.map_err(|e| e.raw_os_error())));
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => ring.submit_and_wait(Duration::from_millis(10)).unwrap(),
            }
        }
        assert_eq!(
            outcomes.len(),
            MESSAGES as usize,
            "every send completed without waiting"
        );
        let sent = outcomes.iter().take_while(|(_, r)| r == &Ok(1000)).count();
        assert!(
            sent > 0 && sent < MESSAGES as usize,
            "{sent} sent before the buffer filled"
        );
        for (i, (token, result)) in outcomes.iter().enumerate() {
            assert_eq!(*token, i as u64, "completions in the order of the sends");
            if i >= sent {
                assert_eq!(
                    *result,
                    Err(Some(libc::EAGAIN)),
                    "send {i} after a full buffer"
                );
            }
        }
        ring.recv_sctp(receiver.as_fd(), 3).unwrap();
        let mut received = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while received.len() < sent && Instant::now() < deadline {
            ring.submit_and_wait(Duration::from_millis(10)).unwrap();
            while let Some(c) = ring.next() {
                let buf = match c {
                    Completion::SctpMessage {
                        token: 3,
                        result: Ok(Some(buf)),
                        more: true,
                    } => buf,
                    // The eight buffers ran out before they came back: armed again.
                    Completion::SctpMessage {
                        token: 3,
                        result: Err(e),
                        more: false,
                    } if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        ring.recv_sctp(receiver.as_fd(), 3).unwrap();
                        continue;
                    }
                    other => panic!("unexpected {other:?}"),
                };
                let m = ring.sctp_message(&buf).expect("the kernel's header");
                assert_eq!(m.flags & libc::MSG_TRUNC, 0);
                assert!(m.control.is_empty(), "no control messages on a Unix socket");
                received.push(m.payload.to_vec());
                ring.recycle(buf);
            }
        }
        let expected: Vec<Vec<u8>> = (0..sent).map(|i| vec![i as u8; 1000]).collect();
        assert_eq!(received, expected);
    }
}
