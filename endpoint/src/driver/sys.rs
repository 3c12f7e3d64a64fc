//! The endpoint's socket-layer system call that socket2 does not wrap: `SCTP_NODELAY`. The one
//! `unsafe` block of the crate.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

/// Sets `SCTP_NODELAY` (level `IPPROTO_SCTP`, RFC 6458 §8.1.5): small ASAP requests leave at once
/// instead of waiting for the peer's delayed SACK (200 ms) while an earlier one is unacknowledged.
pub fn set_sctp_nodelay(socket: &impl AsRawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `one`, a live local; the descriptor
    // is borrowed from an open socket for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_SCTP,
            libc::SCTP_NODELAY,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
