//! The endpoint's ASAP over kernel SCTP (RFC 5352 §3, socket API RFC 6458): a one-to-one
//! (`SOCK_STREAM`) association to a registrar; each message leaves whole with PPID 11 in an
//! `SCTP_SNDINFO` control message that is built here as bytes, and arrives whole, one per read.
//!
//! Every association sets `SCTP_NODELAY` (the one socket option socket2 does not wrap, in
//! `sys.rs`), and every message also carries `SCTP_SACK_IMMEDIATELY` (RFC 7053's I bit) so that the
//! registrar acknowledges at once. Received messages come without their PPID (`SCTP_RECVRCVINFO`
//! stays off); on an ASAP association the registrar sends ASAP only.

use std::io::{self, IoSlice, Read};
use std::mem::{offset_of, size_of};
use std::net::SocketAddr;
use std::time::Duration;

use rserpool_protocol::MAX_MESSAGE_LEN;
use socket2::{Domain, MsgHdr, Protocol, Socket, Type};

/// ASAP's payload protocol identifier (RFC 5352 §5).
pub const PPID_ASAP: u32 = 11;

/// Where the data of a control message starts (`CMSG_ALIGN(sizeof(struct cmsghdr))`).
const CMSG_HEADER: usize = cmsg_align(size_of::<libc::cmsghdr>());
/// The room of the `SCTP_SNDINFO` control message (`CMSG_SPACE(sizeof(struct sctp_sndinfo))`).
const SNDINFO_SPACE: usize = CMSG_HEADER + cmsg_align(size_of::<libc::sctp_sndinfo>());
/// `SCTP_SACK_IMMEDIATELY` as the `snd_flags` field holds it.
const SACK_IMMEDIATELY: u16 = libc::SCTP_SACK_IMMEDIATELY as u16;

/// `CMSG_ALIGN`: control messages are aligned to `size_t`.
const fn cmsg_align(len: usize) -> usize {
    (len + size_of::<usize>() - 1) & !(size_of::<usize>() - 1)
}

/// Opens a one-to-one SCTP association to `address`, waiting at most `timeout`. A kernel
/// without SCTP gives an error that says so.
pub fn connect(address: SocketAddr, timeout: Duration) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::SCTP),
    )
    .map_err(|e| unavailable(address, e))?;
    super::sys::set_sctp_nodelay(&socket)?;
    socket.connect_timeout(&address.into(), timeout)?;
    Ok(socket)
}

/// Explains a failed `socket()` call when the reason is a kernel without SCTP.
fn unavailable(address: SocketAddr, e: io::Error) -> io::Error {
    let missing = matches!(
        e.raw_os_error(),
        Some(libc::EPROTONOSUPPORT | libc::ESOCKTNOSUPPORT | libc::EAFNOSUPPORT)
    );
    if !missing {
        return e;
    }
    let family = if address.is_ipv6() {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    io::Error::new(
        e.kind(),
        format!(
            "kernel SCTP is not available: socket({family}, SOCK_STREAM, IPPROTO_SCTP) failed \
             with {e}; load it (`modprobe sctp`) or reach the registrar over tcp:// or mptcp://"
        ),
    )
}

/// The `SCTP_SNDINFO` control message for a message on stream 0 with `ppid` and `flags`: a
/// `struct cmsghdr` (level `IPPROTO_SCTP`) followed by a `struct sctp_sndinfo`.
fn sndinfo(ppid: u32, flags: u16) -> [u8; SNDINFO_SPACE] {
    let mut c = [0; SNDINFO_SPACE];
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
    let data = &mut c[CMSG_HEADER..];
    put(
        data,
        offset_of!(libc::sctp_sndinfo, snd_flags),
        &flags.to_ne_bytes(),
    );
    // The PPID is opaque to the kernel and travels as written: network byte order.
    put(
        data,
        offset_of!(libc::sctp_sndinfo, snd_ppid),
        &ppid.to_be_bytes(),
    );
    c
}

/// Copies `value` into `buf` at `offset` (offsets of the structures above, always in range).
fn put(buf: &mut [u8], offset: usize, value: &[u8]) {
    buf[offset..offset + value.len()].copy_from_slice(value);
}

/// Sends `message` as one SCTP message with PPID 11, asking for an immediate SACK.
pub fn send(socket: &Socket, message: &[u8]) -> io::Result<()> {
    let control = sndinfo(PPID_ASAP, SACK_IMMEDIATELY);
    let buffers = [IoSlice::new(message)];
    let header = MsgHdr::new().with_buffers(&buffers).with_control(&control);
    loop {
        match socket.sendmsg(&header, libc::MSG_NOSIGNAL) {
            Ok(n) if n == message.len() => return Ok(()),
            Ok(n) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("SCTP took {n} of the {} bytes of a message", message.len()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads messages until the association ends or breaks, handing each to `on_message` until it
/// returns false. SCTP delivers at most one message per read; a read that fills the whole buffer
/// is a message longer than ASAP allows and ends the association with an error.
pub fn read_messages(socket: &Socket, mut on_message: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN + 1];
    let mut reader = socket;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the registrar sent an SCTP message longer than {MAX_MESSAGE_LEN} bytes"),
            ));
        }
        if !on_message(&buf[..n]) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
        bytes[offset..offset + N].try_into().unwrap()
    }

    #[test]
    fn sndinfo_carries_ppid_11_and_the_sack_immediately_flag() {
        let c = sndinfo(PPID_ASAP, SACK_IMMEDIATELY);
        assert_eq!(c.len(), CMSG_HEADER + 16, "sctp_sndinfo is 16 bytes");
        let len = usize::from_ne_bytes(field(&c, offset_of!(libc::cmsghdr, cmsg_len)));
        assert_eq!(len, CMSG_HEADER + size_of::<libc::sctp_sndinfo>());
        assert_eq!(
            i32::from_ne_bytes(field(&c, offset_of!(libc::cmsghdr, cmsg_level))),
            132
        );
        assert_eq!(
            i32::from_ne_bytes(field(&c, offset_of!(libc::cmsghdr, cmsg_type))),
            2,
            "SCTP_SNDINFO"
        );
        let data = &c[CMSG_HEADER..];
        assert_eq!(u16::from_ne_bytes(field(data, 0)), 0, "stream 0");
        assert_eq!(
            u16::from_ne_bytes(field(data, 2)),
            8,
            "SCTP_SACK_IMMEDIATELY"
        );
        assert_eq!(&data[4..8], &[0, 0, 0, 11], "PPID 11 in network order");
        assert_eq!(&data[8..16], &[0; 8], "no context, association 0");
    }

    #[test]
    fn a_kernel_without_sctp_is_named_and_other_errors_pass_unchanged() {
        let addr: SocketAddr = "[::1]:9".parse().unwrap();
        let e = unavailable(addr, io::Error::from_raw_os_error(libc::EPROTONOSUPPORT));
        let text = e.to_string();
        assert!(text.starts_with("kernel SCTP is not available"), "{text}");
        assert!(
            text.contains("socket(AF_INET6, SOCK_STREAM, IPPROTO_SCTP)"),
            "{text}"
        );
        assert!(text.contains("modprobe sctp"), "{text}");
        let refused = unavailable(addr, io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert_eq!(refused.raw_os_error(), Some(libc::ECONNREFUSED));
    }

    /// On this machine either SCTP works (a closed port refuses the association) or the error
    /// names the missing kernel SCTP.
    #[test]
    fn connecting_reports_either_refusal_or_missing_sctp() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let e = connect(addr, Duration::from_secs(5)).expect_err("nothing listens there");
        let text = e.to_string();
        match Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::SCTP)) {
            Ok(_) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{text}"),
            Err(_) => assert!(text.contains("kernel SCTP is not available"), "{text}"),
        }
    }
}
