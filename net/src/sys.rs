//! The raw system calls the socket layer needs and socket2 does not wrap, for servers and clients
//! alike: socket options as byte buffers, `sendmsg`/`recvmsg` with ancillary data and their
//! batched forms `sendmmsg`/`recvmmsg` (also with each datagram's address, for UDP), thread affinity and the online CPU count. This is the
//! only module of the crate with `unsafe` code (allowed on its declaration in `lib.rs`); callers
//! pass and get plain slices.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A buffer length as `socklen_t`, refused when it does not fit.
fn socklen(len: usize) -> io::Result<libc::socklen_t> {
    libc::socklen_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer too long for socklen_t"))
}

/// `setsockopt(fd, level, name, value)`.
pub(crate) fn set_option(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    value: &[u8],
) -> io::Result<()> {
    let len = socklen(value.len())?;
    // SAFETY: `value` is a live buffer of `len` bytes that the kernel only reads.
    let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, value.as_ptr().cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getsockopt(fd, level, name, buf)`: `buf` goes in (some options read an argument from it, such as
/// an association id) and comes back with the option's value; returns how many bytes are valid.
pub(crate) fn get_option(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut len = socklen(buf.len())?;
    // SAFETY: `buf` is a live, writable buffer of `len` bytes; the kernel writes at most `len` bytes
    // into it and the written length into `len`, which outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    // Only the SCTP peel-off options return a positive value (the new socket, also in `buf`).
    if rc >= 0 {
        Ok((len as usize).min(buf.len()))
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises the soft limit of open files to the hard one; returns the limit now in force.
pub(crate) fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live, writable `rlimit` the kernel fills in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a live `rlimit` the kernel only reads.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Ok(limit.rlim_cur)
}

/// Takes ownership of a file descriptor a socket option has just created (such as
/// `SCTP_SOCKOPT_PEELOFF_FLAGS`), so that it is closed when dropped. Refuses a negative value.
pub(crate) fn created_fd(fd: i32) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the kernel returned the invalid file descriptor {fd}"),
        ));
    }
    // SAFETY: the kernel has just created `fd` for this process and returned it to the caller,
    // who passes it here once; no other owner exists, so `OwnedFd` may close it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An empty `msghdr`: no address, no data, no ancillary data.
fn empty_msghdr() -> libc::msghdr {
    // SAFETY: `msghdr` is plain old data (pointers, lengths and flags); all zeroes is the valid
    // "nothing" value, and the private padding some C libraries add is zeroed too.
    unsafe { std::mem::zeroed() }
}

/// What `recv_msg` received, or one message of `recv_mmsg`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Received {
    /// Bytes of data written to the data buffer.
    pub len: usize,
    /// Bytes of ancillary data written to the control buffer.
    pub control_len: usize,
    /// The message flags (`MSG_EOR`, `MSG_NOTIFICATION`, `MSG_CTRUNC`, ...).
    pub flags: i32,
}

/// `recvmsg(fd, ...)` of one message into `buf`, with its ancillary data into `control`.
pub(crate) fn recv_msg(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    control: &mut [u8],
    flags: i32,
) -> io::Result<Received> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut msg = empty_msghdr();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: `msg` points at `iov`, which points at `buf`, and at `control`: live, writable buffers
    // of the lengths given, all outliving the call; the kernel writes only within them.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // `msg_controllen` is a `size_t` in glibc and a `socklen_t` in musl
    #[allow(clippy::unnecessary_cast)]
    let control_len = (msg.msg_controllen as usize).min(control.len());
    Ok(Received {
        len: (n as usize).min(buf.len()),
        control_len,
        flags: msg.msg_flags,
    })
}

/// `sendmsg(fd, ...)` of `data` as one message with the ancillary data `control`, to `to` when
/// given (an SCTP one-to-many socket sets up an association to an address it has none with).
pub(crate) fn send_msg(
    fd: BorrowedFd<'_>,
    to: Option<&socket2::SockAddr>,
    data: &[u8],
    control: &[u8],
    flags: i32,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let mut msg = empty_msghdr();
    if let Some(to) = to {
        msg.msg_name = to.as_ptr().cast_mut().cast();
        msg.msg_namelen = to.len();
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_ptr().cast_mut().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: `msg` points at `iov`, which points at `data`, at `control` and, when given, at
    // `to` (a socket address of the length given): live buffers outliving the call that
    // `sendmsg` only reads (the `*mut` is the C signature).
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The most messages one `recv_mmsg` or `send_mmsg` takes: their headers live on the stack. (The
/// kernel's own bound on a call, `UIO_MAXIOV`, is 1024.)
pub(crate) const MMSG_MAX: usize = 64;

/// An empty `mmsghdr`: an empty `msghdr`, nothing transferred.
fn empty_mmsghdr() -> libc::mmsghdr {
    libc::mmsghdr {
        msg_hdr: empty_msghdr(),
        msg_len: 0,
    }
}

/// An `iovec` of nothing, to fill arrays with.
const NO_IOVEC: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// `recvmmsg(fd, ..., flags, NULL)`: receives message `i` into the `i`-th pair of `messages` (its
/// data buffer, its control buffer) and says what it received in `received[i]`; returns how many
/// messages came. Offers at most `received.len()` messages, and at most [`MMSG_MAX`]; none
/// offered is `Ok(0)` without a call. With `MSG_WAITFORONE` in `flags` a blocking socket waits
/// for the first message only. An interrupted call (`ErrorKind::Interrupted`) is returned: the
/// caller decides whether to retry. An error after the first message ends the batch early, and
/// the kernel reports it with the next call.
pub(crate) fn recv_mmsg<'a>(
    fd: BorrowedFd<'_>,
    messages: impl IntoIterator<Item = (&'a mut [u8], &'a mut [u8])>,
    received: &mut [Received],
    flags: i32,
) -> io::Result<usize> {
    let mut iovs = [NO_IOVEC; MMSG_MAX];
    let mut hdrs = [empty_mmsghdr(); MMSG_MAX];
    // the control buffers' lengths, which the kernel overwrites in `hdrs`
    let mut control_room = [0; MMSG_MAX];
    let mut count = 0;
    for ((data, control), ((iov, hdr), room)) in messages
        .into_iter()
        .zip(iovs.iter_mut().zip(hdrs.iter_mut()).zip(&mut control_room))
        .take(received.len())
    {
        iov.iov_base = data.as_mut_ptr().cast();
        iov.iov_len = data.len();
        hdr.msg_hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_hdr.msg_controllen = control.len() as _;
        *room = control.len();
        count += 1;
    }
    if count == 0 {
        return Ok(0);
    }
    let iov_base = iovs.as_mut_ptr();
    for (i, hdr) in hdrs[..count].iter_mut().enumerate() {
        hdr.msg_hdr.msg_iov = iov_base.wrapping_add(i);
        hdr.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `count` (at most `MMSG_MAX`) entries of `hdrs` each point at their own
    // entry of `iovs`, which points at a data buffer, and at a control buffer: buffers borrowed
    // mutably for `'a`, live and writable for the lengths given, and local arrays that stay in
    // place until the call returns. The kernel writes only within them and into `hdrs`.
    let n = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            count as libc::c_uint,
            flags,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (n as usize).min(count);
    for (((out, hdr), iov), room) in received
        .iter_mut()
        .zip(&hdrs[..n])
        .zip(&iovs)
        .zip(control_room)
    {
        // `msg_controllen` is a `size_t` in glibc and a `socklen_t` in musl
        #[allow(clippy::unnecessary_cast)]
        let control_len = (hdr.msg_hdr.msg_controllen as usize).min(room);
        *out = Received {
            len: (hdr.msg_len as usize).min(iov.iov_len),
            control_len,
            flags: hdr.msg_hdr.msg_flags,
        };
    }
    Ok(n)
}

/// `sendmmsg(fd, ..., flags)`: sends each pair of `messages` (its data, its ancillary data) as
/// one message, over the socket's association or connection; returns how many messages left,
/// fewer than offered when the send buffer filled (or an error stopped the batch: the next call
/// then meets it at its first message). Offers at most [`MMSG_MAX`] messages; none offered is
/// `Ok(0)` without a call. An interrupted call (`ErrorKind::Interrupted`) is returned: the caller
/// decides whether to retry.
pub(crate) fn send_mmsg<'a>(
    fd: BorrowedFd<'_>,
    messages: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    flags: i32,
) -> io::Result<usize> {
    let mut iovs = [NO_IOVEC; MMSG_MAX];
    let mut hdrs = [empty_mmsghdr(); MMSG_MAX];
    let mut count = 0;
    for ((data, control), (iov, hdr)) in messages
        .into_iter()
        .zip(iovs.iter_mut().zip(hdrs.iter_mut()))
    {
        iov.iov_base = data.as_ptr().cast_mut().cast();
        iov.iov_len = data.len();
        hdr.msg_hdr.msg_control = control.as_ptr().cast_mut().cast();
        hdr.msg_hdr.msg_controllen = control.len() as _;
        count += 1;
    }
    if count == 0 {
        return Ok(0);
    }
    let iov_base = iovs.as_mut_ptr();
    for (i, hdr) in hdrs[..count].iter_mut().enumerate() {
        hdr.msg_hdr.msg_iov = iov_base.wrapping_add(i);
        hdr.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `count` (at most `MMSG_MAX`) entries of `hdrs` each point at their own
    // entry of `iovs`, which points at a data buffer, and at a control buffer: buffers borrowed
    // for `'a`, live for the lengths given, and local arrays that stay in place until the call
    // returns. The kernel only reads the buffers (the `*mut` is the C signature) and writes
    // each entry's `msg_len` into `hdrs`.
    let n = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            count as libc::c_uint,
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok((n as usize).min(count))
    }
}

/// The socket address a `sockaddr_storage` of `len` bytes holds: IPv4 or IPv6, else `None`.
fn socket_addr_of(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: `sockaddr_storage` is aligned and large enough for every address type, and
            // the kernel wrote a `sockaddr_in` into it (its family says so, its length covers it).
            let sin = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a `sockaddr_in6`.
            let sin6 = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `addr` as a `sockaddr_storage` and its length.
fn storage_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let sock = socket2::SockAddr::from(addr);
    // SAFETY: `SockAddr` holds a `sockaddr_storage` and its length; both are plain data.
    (
        unsafe { *sock.as_ptr().cast::<libc::sockaddr_storage>() },
        sock.len(),
    )
}

/// What `recv_mmsg_from` received into one buffer: its length, whether the datagram was longer
/// than the buffer (truncated), and its source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReceivedFrom {
    /// Bytes in the buffer.
    pub len: usize,
    /// The datagram did not fit (`MSG_TRUNC`).
    pub truncated: bool,
    /// The sender, if the kernel gave an IP address.
    pub from: Option<SocketAddr>,
}

/// `recvmmsg(fd, ..., flags, NULL)` on a datagram socket, with each message's source: receives
/// datagram `i` into the `i`-th buffer of `buffers` and says what came in `received[i]`; returns
/// how many. Offers at most `received.len()` and [`MMSG_MAX`] messages; none offered is `Ok(0)`
/// without a call.
pub(crate) fn recv_mmsg_from<'a>(
    fd: BorrowedFd<'_>,
    buffers: impl IntoIterator<Item = &'a mut [u8]>,
    received: &mut [ReceivedFrom],
    flags: i32,
) -> io::Result<usize> {
    let mut iovs = [NO_IOVEC; MMSG_MAX];
    let mut hdrs = [empty_mmsghdr(); MMSG_MAX];
    // SAFETY: `sockaddr_storage` is plain data, for which all zeros is a valid value.
    let mut names: [libc::sockaddr_storage; MMSG_MAX] = unsafe { std::mem::zeroed() };
    let mut count = 0;
    for (data, (iov, hdr)) in buffers
        .into_iter()
        .zip(iovs.iter_mut().zip(hdrs.iter_mut()))
        .take(received.len())
    {
        iov.iov_base = data.as_mut_ptr().cast();
        iov.iov_len = data.len();
        hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        count += 1;
    }
    if count == 0 {
        return Ok(0);
    }
    let (iov_base, name_base) = (iovs.as_mut_ptr(), names.as_mut_ptr());
    for (i, hdr) in hdrs[..count].iter_mut().enumerate() {
        hdr.msg_hdr.msg_iov = iov_base.wrapping_add(i);
        hdr.msg_hdr.msg_iovlen = 1;
        hdr.msg_hdr.msg_name = name_base.wrapping_add(i).cast();
    }
    // SAFETY: the first `count` (at most `MMSG_MAX`) entries of `hdrs` each point at their own
    // entry of `iovs`, which points at a data buffer borrowed mutably for `'a` and writable for
    // its length, and at their own entry of `names` with its size: local arrays that stay in
    // place until the call returns. The kernel writes only within them and into `hdrs`.
    let n = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            count as libc::c_uint,
            flags,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (n as usize).min(count);
    for (i, out) in received.iter_mut().enumerate().take(n) {
        let hdr = &hdrs[i].msg_hdr;
        *out = ReceivedFrom {
            len: (hdrs[i].msg_len as usize).min(iovs[i].iov_len),
            truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
            from: socket_addr_of(&names[i], hdr.msg_namelen),
        };
    }
    Ok(n)
}

/// `sendmmsg(fd, ..., flags)` on a datagram socket: sends each of `datagrams` (destination,
/// bytes) as one datagram; returns how many left, fewer than offered when the socket buffer
/// filled or an error stopped the batch (the next call meets it at its first datagram). Offers
/// at most [`MMSG_MAX`]; none offered is `Ok(0)` without a call.
pub(crate) fn send_mmsg_to<'a>(
    fd: BorrowedFd<'_>,
    datagrams: impl IntoIterator<Item = (SocketAddr, &'a [u8])>,
    flags: i32,
) -> io::Result<usize> {
    let mut iovs = [NO_IOVEC; MMSG_MAX];
    let mut hdrs = [empty_mmsghdr(); MMSG_MAX];
    // SAFETY: `sockaddr_storage` is plain data, for which all zeros is a valid value.
    let mut names: [libc::sockaddr_storage; MMSG_MAX] = unsafe { std::mem::zeroed() };
    let mut name_lens = [0 as libc::socklen_t; MMSG_MAX];
    let mut count = 0;
    for ((to, data), ((iov, name), len)) in datagrams.into_iter().zip(
        iovs.iter_mut()
            .zip(names.iter_mut())
            .zip(name_lens.iter_mut()),
    ) {
        iov.iov_base = data.as_ptr().cast_mut().cast();
        iov.iov_len = data.len();
        (*name, *len) = storage_of(to);
        count += 1;
    }
    if count == 0 {
        return Ok(0);
    }
    let (iov_base, name_base) = (iovs.as_mut_ptr(), names.as_mut_ptr());
    for (i, hdr) in hdrs[..count].iter_mut().enumerate() {
        hdr.msg_hdr.msg_iov = iov_base.wrapping_add(i);
        hdr.msg_hdr.msg_iovlen = 1;
        hdr.msg_hdr.msg_name = name_base.wrapping_add(i).cast();
        hdr.msg_hdr.msg_namelen = name_lens[i];
    }
    // SAFETY: the first `count` (at most `MMSG_MAX`) entries of `hdrs` each point at their own
    // entry of `iovs`, which points at a data buffer borrowed for `'a` and live for its length,
    // and at their own entry of `names` with its length: local arrays that stay in place until
    // the call returns. The kernel only reads the buffers and addresses (the `*mut` is the C
    // signature) and writes each entry's `msg_len` into `hdrs`.
    let n = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            count as libc::c_uint,
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok((n as usize).min(count))
    }
}

/// Binds the calling thread to CPU `core` (`sched_setaffinity`).
pub(crate) fn set_thread_affinity(core: usize) -> io::Result<()> {
    const WORD_BITS: usize = libc::c_ulong::BITS as usize;
    // glibc's cpu_set_t: 1024 bits in words of `unsigned long`
    let mut mask = [0 as libc::c_ulong; 1024 / WORD_BITS];
    let word = mask.get_mut(core / WORD_BITS).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("core {core} is beyond the 1024 CPUs a cpu_set_t can name"),
        )
    })?;
    *word |= 1 << (core % WORD_BITS);
    // SAFETY: `mask` is a live buffer with the size and layout of `cpu_set_t`, passed with its
    // length; the kernel only reads it. Pid 0 names the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, size_of_val(&mask), mask.as_ptr().cast()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPUs the calling thread may run on (`sched_getaffinity`: taskset, a cgroup cpuset),
/// ascending.
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    const WORD_BITS: usize = libc::c_ulong::BITS as usize;
    let mut mask = [0 as libc::c_ulong; 1024 / WORD_BITS];
    // SAFETY: `mask` is a live, writable buffer with the size and layout of `cpu_set_t`, passed
    // with its length; the kernel writes at most that many bytes. Pid 0 names the calling thread.
    let rc = unsafe { libc::sched_getaffinity(0, size_of_val(&mask), mask.as_mut_ptr().cast()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..mask.len() * WORD_BITS)
        .filter(|&cpu| mask[cpu / WORD_BITS] & (1 << (cpu % WORD_BITS)) != 0)
        .collect())
}

/// The number of online CPUs (`sysconf(_SC_NPROCESSORS_ONLN)`), or `None` if it is unknown.
pub(crate) fn online_cpus() -> Option<usize> {
    // SAFETY: `sysconf` takes no pointers and has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).ok().filter(|&n| n > 0)
}
