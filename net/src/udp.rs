//! UDP sockets: the registrar's bound ones for requests and presence and its unbound one that
//! sends ASAP_SERVER_ANNOUNCE to multicast and unicast targets, and the one a PE or PU hears
//! announces on; which local address reaches a peer.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::NetError;

/// A close-on-exec UDP socket of `domain`, non-blocking unless `blocking`.
fn udp_socket(domain: Domain, blocking: bool, what: &str) -> Result<Socket, NetError> {
    let ty = if blocking {
        Type::DGRAM
    } else {
        Type::DGRAM.nonblocking()
    };
    Socket::new(domain, ty.cloexec(), Some(Protocol::UDP))
        .map_err(|e| NetError::io(format!("create a UDP socket for {what}"), e))
}

/// Opens a non-blocking, close-on-exec UDP socket bound to `addr`.
///
/// Sets `SO_REUSEPORT` when `reuse_port` (one socket per worker, the kernel spreads datagrams over
/// them by flow), `IPV6_V6ONLY` for IPv6 addresses, and `SO_RCVBUF`/`SO_SNDBUF` to `buffer_bytes`
/// unless it is 0 (the kernel caps them at `net.core.rmem_max`/`wmem_max`).
pub fn bind_udp(
    addr: SocketAddr,
    reuse_port: bool,
    buffer_bytes: usize,
) -> Result<Socket, NetError> {
    let what = format!("udp://{addr}");
    let sock = udp_socket(Domain::for_address(addr), false, &what)?;
    let set = |opt: &str, r: std::io::Result<()>| {
        r.map_err(|e| NetError::io(format!("set {opt} on the socket for {what}"), e))
    };
    if reuse_port {
        set("SO_REUSEPORT", sock.set_reuse_port(true))?;
    }
    if addr.is_ipv6() {
        set("IPV6_V6ONLY", sock.set_only_v6(true))?;
    }
    if buffer_bytes > 0 {
        set("SO_RCVBUF", sock.set_recv_buffer_size(buffer_bytes))?;
        set("SO_SNDBUF", sock.set_send_buffer_size(buffer_bytes))?;
    }
    sock.bind(&SockAddr::from(addr))
        .map_err(|e| NetError::io(format!("bind {what}"), e))?;
    Ok(sock)
}

/// Buffers for receiving up to [`UdpRecvBatch::capacity`] datagrams with one `recvmmsg`
/// ([`UdpRecvBatch::recv`]), each with its source.
#[derive(Debug)]
pub struct UdpRecvBatch {
    /// `capacity` buffers of `size` bytes, back to back.
    bytes: Vec<u8>,
    size: usize,
    received: Vec<crate::sys::ReceivedFrom>,
    count: usize,
}

impl UdpRecvBatch {
    /// Room for `count` datagrams (at most 64 a call) of up to `size` bytes each; a longer one
    /// is dropped as truncated.
    pub fn new(count: usize, size: usize) -> Self {
        let count = count.clamp(1, crate::sys::MMSG_MAX);
        Self {
            bytes: vec![0; count * size.max(1)],
            size: size.max(1),
            received: vec![crate::sys::ReceivedFrom::default(); count],
            count: 0,
        }
    }

    /// How many datagrams one call takes at most.
    pub fn capacity(&self) -> usize {
        self.received.len()
    }

    /// Receives what waits on `socket` (non-blocking: `WouldBlock` when nothing does), up to
    /// the capacity, in one `recvmmsg`; returns how many datagrams came (truncated ones
    /// included, which [`Self::datagrams`] leaves out).
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsFd;
        self.count = 0;
        let n = crate::sys::recv_mmsg_from(
            socket.as_fd(),
            self.bytes.chunks_mut(self.size),
            &mut self.received,
            libc::MSG_DONTWAIT,
        )?;
        self.count = n;
        Ok(n)
    }

    /// The datagrams of the last [`Self::recv`] that arrived whole, with their sources.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.received[..self.count]
            .iter()
            .zip(self.bytes.chunks(self.size))
            .filter(|(r, _)| !r.truncated)
            .filter_map(|(r, buf)| Some((r.from?, &buf[..r.len])))
    }
}

/// Sends `datagrams` (destination, bytes) from `socket` with `sendmmsg`, 64 a call; returns how
/// many left. Stops at the first call that sends fewer than offered (the socket buffer is full:
/// UDP drops the rest, the caller may count them) or fails.
pub fn send_batch_to<'a>(
    socket: &UdpSocket,
    datagrams: impl IntoIterator<Item = (SocketAddr, &'a [u8])>,
) -> io::Result<usize> {
    use std::os::fd::AsFd;
    let mut datagrams = datagrams.into_iter().peekable();
    let mut sent = 0;
    while datagrams.peek().is_some() {
        let mut offered = 0;
        let batch = datagrams
            .by_ref()
            .take(crate::sys::MMSG_MAX)
            .inspect(|_| offered += 1);
        let n = match crate::sys::send_mmsg_to(
            socket.as_fd(),
            batch,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        ) {
            Ok(n) => n,
            Err(e) if sent > 0 && e.kind() == io::ErrorKind::WouldBlock => return Ok(sent),
            Err(e) => return Err(e),
        };
        sent += n;
        if n < offered {
            break;
        }
    }
    Ok(sent)
}

/// `UDP_SEGMENT` (linux/udp.h, Linux 4.18): the segment size of a UDP GSO send.
const UDP_SEGMENT: i32 = 103;

/// The room of a `UDP_SEGMENT` control message ([`udp_segment_control`]).
pub const UDP_SEGMENT_CONTROL_LEN: usize = crate::sctp::cmsg_space(size_of::<u16>());

/// The most segments one GSO send carries (the kernel's `UDP_MAX_SEGMENTS`).
pub const UDP_MAX_SEGMENTS: usize = 64;

/// A `UDP_SEGMENT` control message: the datagram sent with it leaves as datagrams of `segment`
/// bytes each, the last one shorter (UDP generic segmentation offload).
pub fn udp_segment_control(segment: u16) -> [u8; UDP_SEGMENT_CONTROL_LEN] {
    use crate::sctp::{CMSG_HEADER, put_cmsg_header};
    let mut c = [0; UDP_SEGMENT_CONTROL_LEN];
    put_cmsg_header(&mut c, libc::SOL_UDP, UDP_SEGMENT, size_of::<u16>());
    c[CMSG_HEADER..CMSG_HEADER + size_of::<u16>()].copy_from_slice(&segment.to_ne_bytes());
    c
}

/// Whether the kernel segments UDP sends for `socket` (`UDP_SEGMENT`, Linux 4.18 and later):
/// the option is set to 0 (no segmentation by default; each send asks with its control
/// message).
pub fn udp_gso_available(socket: std::os::fd::BorrowedFd<'_>) -> bool {
    crate::sys::set_option(socket, libc::SOL_UDP, UDP_SEGMENT, &0i32.to_ne_bytes()).is_ok()
}

/// Sends `bytes` to `to` from `socket` as datagrams of `segment` bytes each (the last one
/// shorter) with one `sendmsg` (UDP GSO; at most [`UDP_MAX_SEGMENTS`] segments); never waits
/// for room.
pub fn send_segmented_to(
    socket: &UdpSocket,
    to: SocketAddr,
    bytes: &[u8],
    segment: u16,
) -> io::Result<usize> {
    use std::os::fd::AsFd;
    crate::sys::send_msg(
        socket.as_fd(),
        Some(&SockAddr::from(to)),
        bytes,
        &udp_segment_control(segment),
        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
    )
}

/// Sets the Don't Fragment bit on what `socket` sends, without the kernel's path MTU cache
/// (`IP_PMTUDISC_PROBE`, `IPV6_PMTUDISC_PROBE`): for SCTP in UDP (RFC 6951), whose packets fit
/// a fixed MTU (RFC 4960 §7.3 asks SCTP not to have them fragmented). It also spares the kernel
/// the shared IP identification counter of fragmentable datagrams (5 % of a registrar's time
/// under load, `__ip_select_ident`).
pub fn set_dont_fragment(socket: std::os::fd::BorrowedFd<'_>, ipv6: bool) -> io::Result<()> {
    let (level, name, value) = if ipv6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        )
    };
    crate::sys::set_option(socket, level, name, &value.to_ne_bytes())
}

/// Opens the non-blocking, close-on-exec UDP socket that sends ASAP_SERVER_ANNOUNCE to `targets`
/// (multicast groups and unicast addresses, IPv4 and IPv6 mixed).
///
/// It is bound to `source_port` on the unspecified address (0: an ephemeral port the kernel picks
/// at the first send): a PU that finds no transport parameter in an announce reaches the PR at the
/// datagram's source address and, as RSPLIB reads it, its source port (RFC 5352 §3.6), so the
/// daemon sends from its ASAP port. Multicast leaves with `ttl` as `IP_MULTICAST_TTL` and `IPV6_MULTICAST_HOPS`, and loops back to
/// this host (`IP_MULTICAST_LOOP`, `IPV6_MULTICAST_LOOP`), so PEs on the same machine hear it.
/// With any IPv6 target the socket is a dual-stack IPv6 socket that also sends to IPv4 targets.
pub fn announce_socket(
    targets: &[SocketAddr],
    ttl: u32,
    source_port: u16,
) -> Result<Socket, NetError> {
    if targets.is_empty() {
        return Err(NetError::InvalidRequest(
            "no announce targets: give at least one udp:// multicast or unicast address to \
             announce to"
                .to_owned(),
        ));
    }
    let v6 = targets.iter().any(SocketAddr::is_ipv6);
    let v4 = targets.iter().any(SocketAddr::is_ipv4);
    let what = "the announce socket";
    let sock = udp_socket(if v6 { Domain::IPV6 } else { Domain::IPV4 }, false, what)?;
    let set = |opt: &str, r: std::io::Result<()>| {
        r.map_err(|e| NetError::io(format!("set {opt} on {what}"), e))
    };
    if v6 {
        set("IPV6_V6ONLY", sock.set_only_v6(false))?;
        set("IPV6_MULTICAST_HOPS", sock.set_multicast_hops_v6(ttl))?;
        set("IPV6_MULTICAST_LOOP", sock.set_multicast_loop_v6(true))?;
    }
    if v4 {
        set("IP_MULTICAST_TTL", sock.set_multicast_ttl_v4(ttl))?;
        set("IP_MULTICAST_LOOP", sock.set_multicast_loop_v4(true))?;
    }
    if source_port != 0 {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let addr = SocketAddr::new(ip, source_port);
        sock.bind(&addr.into())
            .map_err(|e| NetError::io(format!("bind {what} to udp://{addr}"), e))?;
    }
    Ok(sock)
}

/// Opens the blocking, close-on-exec UDP socket a PE or PU receives ASAP_SERVER_ANNOUNCEs on at
/// `address`, bound to it as given. A multicast group is bound as the group address, so that it
/// hears that group only and shares its port with sockets bound to other addresses of the host
/// (a registrar's UDP listener on 127.0.0.1:3863 beside the default group 239.0.0.50:3863), and
/// joined where announces come from: IPv4 on the default interface (other hosts) and on the
/// loopback (registrars of this host, whose announces leave through it), either being enough;
/// IPv6 on interface 0. `SO_REUSEADDR` lets several endpoints of one host hear the same group.
pub fn announce_receiver(address: SocketAddr) -> Result<UdpSocket, NetError> {
    let what = format!("announces at udp://{address}");
    let sock = udp_socket(Domain::for_address(address), true, &what)?;
    sock.set_reuse_address(true)
        .map_err(|e| NetError::io(format!("set SO_REUSEADDR on the socket for {what}"), e))?;
    if address.is_ipv6() {
        sock.set_only_v6(true)
            .map_err(|e| NetError::io(format!("set IPV6_V6ONLY on the socket for {what}"), e))?;
    }
    sock.bind(&SockAddr::from(address))
        .map_err(|e| NetError::io(format!("bind udp://{address} for {what}"), e))?;
    let sock = UdpSocket::from(sock);
    let joins: Vec<io::Result<()>> = match address.ip() {
        IpAddr::V4(group) if group.is_multicast() => [Ipv4Addr::UNSPECIFIED, Ipv4Addr::LOCALHOST]
            .iter()
            .map(|interface| sock.join_multicast_v4(&group, interface))
            .collect(),
        IpAddr::V6(group) if group.is_multicast() => vec![sock.join_multicast_v6(&group, 0)],
        _ => Vec::new(),
    };
    if joins.iter().all(Result::is_err)
        && let Some(Err(e)) = joins.into_iter().next()
    {
        return Err(NetError::io(
            format!("join the multicast group for {what}"),
            e,
        ));
    }
    Ok(sock)
}

/// The local address this host would use to reach `peer` (a PE's user-transport address must be
/// one of its association's addresses). Connecting a UDP socket sends nothing.
pub fn local_ip_towards(peer: SocketAddr) -> io::Result<IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = UdpSocket::bind(any)?;
    probe.connect(peer)?;
    Ok(probe.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    /// `send_batch_to` to two receivers, `UdpRecvBatch` on one: every datagram whole, in order,
    /// with its source; one longer than the buffers is left out as truncated; an empty socket
    /// is `WouldBlock`.
    #[test]
    fn batched_sends_and_receives_carry_each_datagram_with_its_address() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        for s in [&a, &b] {
            set_dont_fragment(std::os::fd::AsFd::as_fd(s), false).unwrap();
        }
        let payloads: Vec<Vec<u8>> = (0..100u8)
            .map(|i| vec![i; 1 + usize::from(i) * 7])
            .collect();
        let mut datagrams: Vec<(SocketAddr, &[u8])> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let to = if i % 2 == 0 { &a } else { &b };
                (to.local_addr().unwrap(), &p[..])
            })
            .collect();
        let long = vec![7u8; 1_500];
        datagrams.insert(10, (a.local_addr().unwrap(), &long[..]));
        assert_eq!(
            send_batch_to(&sender, datagrams.iter().copied()).unwrap(),
            101
        );
        let mut batch = UdpRecvBatch::new(16, 1_024);
        let mut got = Vec::new();
        let mut came = 0;
        loop {
            match batch.recv(&a) {
                Ok(n) => {
                    came += n;
                    for (from, bytes) in batch.datagrams() {
                        assert_eq!(from, sender.local_addr().unwrap());
                        got.push(bytes.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(came, 51, "50 datagrams and the long one");
        let want: Vec<Vec<u8>> = payloads.iter().step_by(2).cloned().collect();
        assert_eq!(got, want);
        assert_eq!(
            batch.recv(&a).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    /// One GSO send of 5 segments of 300 bytes and a last of 100 arrives as 6 datagrams with
    /// those bytes.
    #[test]
    fn a_segmented_send_arrives_as_its_segments() {
        let (sender, receiver) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        assert!(
            udp_gso_available(std::os::fd::AsFd::as_fd(&sender)),
            "Linux 4.18 or later"
        );
        let bytes: Vec<u8> = (0..1_600u32).map(|i| (i / 300) as u8).collect();
        let to = receiver.local_addr().unwrap();
        assert_eq!(send_segmented_to(&sender, to, &bytes, 300).unwrap(), 1_600);
        receiver
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 2_000];
        for i in 0..6u8 {
            let (n, from) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!(from, sender.local_addr().unwrap());
            assert_eq!(n, if i < 5 { 300 } else { 100 });
            assert!(buf[..n].iter().all(|&b| b == i), "segment {i}");
        }
    }

    /// Receives one datagram on `sock`, waiting up to 10 s.
    fn receive(sock: Socket) -> (Vec<u8>, SocketAddr) {
        sock.set_nonblocking(false).unwrap();
        let sock = UdpSocket::from(sock);
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0; 64];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        (buf[..n].to_vec(), from)
    }

    #[test]
    fn announce_reaches_a_bound_unicast_target() {
        let rx = bind_udp("127.0.0.1:0".parse().unwrap(), true, 1 << 16).unwrap();
        assert!(rx.nonblocking().unwrap());
        assert!(rx.reuse_port().unwrap());
        let target = rx.local_addr().unwrap().as_socket().unwrap();
        let tx = announce_socket(&[target], 4, 0).unwrap();
        assert_eq!(tx.multicast_ttl_v4().unwrap(), 4);
        assert!(tx.multicast_loop_v4().unwrap());
        assert!(tx.nonblocking().unwrap());
        assert_eq!(tx.send_to(b"announce", &target.into()).unwrap(), 8);
        let (data, from) = receive(rx);
        assert_eq!(data, b"announce");
        assert_eq!(from.ip(), target.ip());
    }

    #[test]
    fn announce_leaves_from_the_asked_source_port() {
        let rx = bind_udp("127.0.0.1:0".parse().unwrap(), false, 1 << 16).unwrap();
        let target = rx.local_addr().unwrap().as_socket().unwrap();
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tx = announce_socket(&[target], 1, port).unwrap();
        assert_eq!(tx.send_to(b"a", &target.into()).unwrap(), 1);
        let (_, from) = receive(rx);
        assert_eq!(from.port(), port);
    }

    #[test]
    fn dual_stack_announce_reaches_ipv4_and_ipv6_targets() {
        let rx4 = bind_udp("127.0.0.1:0".parse().unwrap(), false, 0).unwrap();
        let rx6 = bind_udp("[::1]:0".parse().unwrap(), false, 0).unwrap();
        assert!(rx6.only_v6().unwrap());
        let t4 = rx4.local_addr().unwrap().as_socket().unwrap();
        let t6 = rx6.local_addr().unwrap().as_socket().unwrap();
        let tx = announce_socket(&[t4, t6, "[ff02::1:3863]:3863".parse().unwrap()], 1, 0).unwrap();
        assert_eq!(tx.multicast_hops_v6().unwrap(), 1);
        assert_eq!(tx.multicast_ttl_v4().unwrap(), 1);
        assert_eq!(tx.send_to(b"v4", &t4.into()).unwrap(), 2);
        assert_eq!(tx.send_to(b"v6", &t6.into()).unwrap(), 2);
        assert_eq!(receive(rx4).0, b"v4");
        assert_eq!(receive(rx6).0, b"v6");
    }

    #[test]
    fn announces_are_heard_at_a_unicast_address_and_a_multicast_group() {
        let rx = announce_receiver("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(!Socket::from(rx.try_clone().unwrap()).nonblocking().unwrap());
        let target = rx.local_addr().unwrap();
        let tx = announce_socket(&[target], 1, 0).unwrap();
        assert_eq!(tx.send_to(b"heard", &target.into()).unwrap(), 5);
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0; 16];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"heard");
        // joining a group needs a multicast route, which a CI container may lack; then the
        // error says what failed
        match announce_receiver("239.0.0.50:0".parse().unwrap()) {
            Ok(group) => assert_eq!(
                group.local_addr().unwrap().ip(),
                "239.0.0.50".parse::<IpAddr>().unwrap()
            ),
            Err(e) => assert!(e.to_string().contains("join the multicast group"), "{e}"),
        }
    }

    #[test]
    fn a_group_is_heard_beside_a_registrar_on_the_loopback_at_the_same_port() {
        // The default profile's UDP listener holds 127.0.0.1:PORT; announces go to the group at
        // the same port, through the loopback.
        let registrar = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = registrar.local_addr().unwrap().port();
        let group: SocketAddr = (Ipv4Addr::new(239, 0, 0, 50), port).into();
        let rx = match announce_receiver(group) {
            Ok(rx) => rx,
            // No multicast at all in this container: the bind itself must not be what failed.
            Err(e) => {
                assert!(e.to_string().contains("join the multicast group"), "{e}");
                return;
            }
        };
        assert_eq!(rx.local_addr().unwrap(), group);
        let tx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        tx.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
        tx.send_to(b"announce", &group.into()).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0; 16];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"announce");
        registrar.set_nonblocking(true).unwrap();
        assert!(
            registrar.recv_from(&mut buf).is_err(),
            "the listener heard nothing"
        );
    }

    #[test]
    fn the_loopback_is_reached_from_the_loopback() {
        let ip = local_ip_towards("127.0.0.1:9".parse().unwrap()).unwrap();
        assert!(ip.is_loopback(), "{ip}");
    }

    #[test]
    fn announce_needs_a_target() {
        let e = announce_socket(&[], 1, 0).unwrap_err();
        assert!(e.to_string().contains("at least one"), "{e}");
    }
}
