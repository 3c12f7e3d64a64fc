//! Stateless handle resolution over UDP: one ASAP_HANDLE_RESOLUTION datagram to a registrar's
//! UDP ASAP listener, one ASAP_HANDLE_RESOLUTION_RESPONSE back (as RSPLIB's registrar and this
//! one serve PUs without an association). No connection, no cache, no server hunt: the
//! registrars are tried in the order given.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rserpool_protocol::{AsapMessage, Generation, MAX_MESSAGE_LEN, PoolHandle};

use crate::pu::resolution_outcome;
use crate::{DatagramFailure, Error, PeInfo, Timers};

/// Resolves `pool_handle` (`items`: how many PEs to ask for) at the first of `registrars` (UDP
/// addresses) that answers. Each is sent the request and given T1 for the response, up to
/// MAX-REQUEST-RETRANSMIT more times (RFC 5352 §3.7.2, `timers`); a registrar that answers
/// settles the matter (PEs, unknown pool or another refusal), one that refuses the datagram
/// (ICMP port unreachable) or stays silent is passed over. Fails with
/// [`Error::UdpUnreachable`], naming each registrar, when none answers.
pub fn resolve_udp(
    registrars: &[SocketAddr],
    generation: Generation,
    pool_handle: &[u8],
    items: Option<u32>,
    timers: &Timers,
) -> Result<Vec<PeInfo>, Error> {
    if pool_handle.is_empty() {
        return Err(Error::Config("the pool handle is empty".into()));
    }
    if registrars.is_empty() {
        return Err(Error::Unreachable(Vec::new()));
    }
    let request = AsapMessage::HandleResolution {
        subscribe: false,
        pool_handle: PoolHandle(pool_handle),
        items,
    };
    let request = crate::encode(&request, generation).map_err(|e| Error::Config(e.to_string()))?;
    let mut failures = Vec::new();
    for &address in registrars {
        match exchange(address, generation, pool_handle, &request, timers) {
            Ok(outcome) => return outcome,
            Err(error) => failures.push(DatagramFailure { address, error }),
        }
    }
    Err(Error::UdpUnreachable(failures))
}

/// Sends `request` to one registrar until a response for `pool_handle` arrives; the outer
/// `Err` is why none did.
fn exchange(
    address: SocketAddr,
    generation: Generation,
    pool_handle: &[u8],
    request: &[u8],
    timers: &Timers,
) -> Result<Result<Vec<PeInfo>, Error>, String> {
    let any: SocketAddr = if address.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    // Connected: only the registrar's datagrams arrive, and its ICMP refusal is reported.
    socket.connect(address).map_err(|e| e.to_string())?;
    let t1 = Duration::from_millis(timers.t1_request.max(1));
    let attempts = timers.max_request_retransmit + 1;
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    for _ in 0..attempts {
        socket.send(request).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + t1;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e.to_string()),
            };
            let Ok(decoded) = AsapMessage::decode(&buf[..n], generation) else {
                continue;
            };
            if let AsapMessage::HandleResolutionResponse {
                pool_handle: answered,
                resolution,
                ..
            } = decoded.message
                && answered.0 == pool_handle
            {
                return Ok(resolution_outcome(pool_handle, resolution).map(|(pes, _)| pes));
            }
        }
    }
    Err(format!(
        "no response to {attempts} request(s), {} ms apart",
        t1.as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timers(t1: u64) -> Timers {
        Timers {
            t1_request: t1,
            max_request_retransmit: 1,
            ..Timers::default()
        }
    }

    #[test]
    fn a_silent_registrar_is_asked_again_then_named() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = silent.local_addr().unwrap();
        let e = resolve_udp(&[address], Generation::Rfc, b"p", None, &timers(50)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "no registrar reachable: udp://{address}: no response to 2 request(s), 50 ms apart"
            )
        );
        let mut buf = [0u8; 64];
        silent
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        for _ in 0..2 {
            let n = silent.recv(&mut buf).unwrap();
            assert!(matches!(
                AsapMessage::decode(&buf[..n], Generation::Rfc)
                    .unwrap()
                    .message,
                AsapMessage::HandleResolution {
                    pool_handle: PoolHandle(b"p"),
                    ..
                }
            ));
        }
    }

    #[test]
    fn a_refused_datagram_passes_to_the_next_registrar() {
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let registrars = [closed, silent.local_addr().unwrap()];
        let e = resolve_udp(&registrars, Generation::Rfc, b"p", Some(1), &timers(20)).unwrap_err();
        let Error::UdpUnreachable(failures) = e else {
            panic!("{e}");
        };
        assert_eq!(failures.len(), 2);
        assert_eq!(failures[0].address, closed);
        assert!(
            failures[0].error.contains("refused"),
            "{}",
            failures[0].error
        );
        assert!(
            failures[1].error.contains("no response"),
            "{}",
            failures[1].error
        );
        assert_eq!(
            resolve_udp(&[], Generation::Rfc, b"p", None, &timers(1)),
            Err(Error::Unreachable(Vec::new()))
        );
    }
}
