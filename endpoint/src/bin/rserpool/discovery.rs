//! Finding registrars when none is given: listen for their ASAP_SERVER_ANNOUNCEs (RFC 5352 §3.6)
//! at a UDP multicast group or local address until one names a TCP listener, or until the
//! timeout. Discovery happens once, when the command starts; the registrars of that announce are
//! then used as if given with `--registrar`.
//!
//! The socket is `rserpool_net::announce_receiver`'s: bound to the group address (it shares the
//! port with a registrar's UDP listener on the loopback) and joined on the default interface and
//! the loopback, where this host's registrars announce.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rserpool_endpoint::servers::{AnnounceSettings, ServerList};
use rserpool_endpoint::{Registrar, StreamTransport};
use rserpool_protocol::MAX_MESSAGE_LEN;

use crate::reach::{Discovery, REGISTRAR_ENV};

/// Listens as `discovery` says and returns the registrars of the first announce that names a
/// TCP listener (RSPLIB's reading: without transport parameters, the announce's source address
/// and port), telling on stderr which it found.
pub fn discover(discovery: &Discovery) -> Result<Vec<Registrar>, String> {
    let url = discovery.listen;
    let socket = rserpool_net::announce_receiver(url.address).map_err(|e| {
        format!(
            "cannot listen for registrar announces on {url}: {e}; give a registrar with \
             --registrar URL, or another --discover address"
        )
    })?;
    let settings = AnnounceSettings {
        generation: url.generation,
        transport: StreamTransport::Tcp,
        default_port: None,
    };
    let timeout = Duration::from_millis(discovery.timeout_ms);
    let started = Instant::now();
    let mut list = ServerList::default();
    let mut without_tcp: Option<SocketAddr> = None;
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(nothing_heard(discovery, without_tcp));
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| format!("cannot wait for announces on {url}: {e}"))?;
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => return Err(format!("cannot receive announces on {url}: {e}")),
        };
        let now = started.elapsed().as_millis() as u64;
        // The list lives for this one search and never expires its entries.
        match list.on_announce(from, &buf[..n], now, discovery.timeout_ms, &settings) {
            Some(0) if list.entries().is_empty() => without_tcp = Some(from),
            Some(_) if !list.entries().is_empty() => break,
            _ => {}
        }
    }
    for known in list.entries() {
        let id = known.server_id.map_or("?".into(), |id| id.to_string());
        eprintln!(
            "rserpool: using registrar {id} at {}, announced on {url}",
            known.registrar
        );
    }
    Ok(list.entries().iter().map(|k| k.registrar).collect())
}

/// The error when the wait ended without a usable announce.
fn nothing_heard(discovery: &Discovery, without_tcp: Option<SocketAddr>) -> String {
    let url = discovery.listen;
    let seconds = format_seconds(discovery.timeout_ms);
    if let Some(from) = without_tcp {
        return format!(
            "the announces heard on {url} (from {from}) name no TCP listener, which rserpool \
             needs: give the registrar with --registrar URL"
        );
    }
    let heard = format!("no announcement heard on {url} within {seconds}");
    let given = if discovery.asked {
        format!("{heard} (--discover)")
    } else {
        let file = discovery
            .config_file
            .as_ref()
            .map_or("the configuration file".into(), |p| {
                format!("`registrar` in {}", p.display())
            });
        format!("no registrar given (--registrar, ${REGISTRAR_ENV}, {file}) and {heard}")
    };
    format!(
        "{given}: give a registrar with --registrar URL (e.g. tcp://127.0.0.1:3863), let \
         registrars announce themselves there (rserpool-registrar --announce {url}), or wait \
         longer with --discover-timeout MS"
    )
}

/// Milliseconds as seconds for people: "5 s", "0.25 s".
fn format_seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{} s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_read_naturally() {
        assert_eq!(format_seconds(5000), "5 s");
        assert_eq!(format_seconds(250), "0.25 s");
        assert_eq!(format_seconds(1500), "1.5 s");
    }
}
