//! Validation of a layered configuration: ranges, relations between keys, listener conflicts and
//! everything else an operator can get wrong, each problem tied to where the value was set.

use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use rserpool_handlespace::policy::MAX_SELECTION;
use rserpool_protocol::Generation;
use rserpool_protocol::url::{Transport, TransportUrl};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

use super::layers::Origins;
use super::{Config, Origin, Problem};

/// Milliseconds allowed for an interval: 10 ms catches seconds written as milliseconds, one day
/// catches microseconds.
const MILLIS: RangeInclusive<u64> = 10..=86_400_000;

/// Bytes allowed for `limits.max_message_size`: a common header up to the 16-bit length field's
/// reach, rounded up to 4.
const MESSAGE_SIZE: RangeInclusive<usize> = 64..=65536;

/// Every problem of `config`, by layer and line.
pub(super) fn check(config: &Config, origins: &Origins) -> Vec<Problem> {
    let mut c = Checker {
        origins,
        problems: Vec::new(),
    };
    c.registrar(config);
    c.listeners(config);
    c.destinations(config);
    c.announce_and_timers(config);
    c.enrp(config);
    c.limits(config);
    c.subscriptions(config);
    c.tls(config);
    c.io(config);
    c.log(config);
    let mut problems = c.problems;
    problems.sort_by_key(|p| (p.origin.source.layer(), p.origin.line));
    problems
}

/// Collects problems.
struct Checker<'a> {
    origins: &'a Origins,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    /// A problem with the value of `path`.
    fn fail(&mut self, path: &str, message: String) {
        let origin = self.origins.of(path);
        self.problems.push(Problem { origin, message });
    }

    /// A problem with item `index` of the list `path`.
    fn fail_item(&mut self, path: &str, index: usize, message: String) {
        let origin = self.origins.item(path, index);
        self.problems.push(Problem { origin, message });
    }

    /// `path` must lie in `range`; `unit` follows the bounds in the message.
    fn range<T: PartialOrd + Display>(
        &mut self,
        path: &str,
        value: T,
        range: RangeInclusive<T>,
        unit: &str,
    ) {
        if !range.contains(&value) {
            let (lo, hi) = range.into_inner();
            self.fail(
                path,
                format!("`{path}` must be between {lo} and {hi}{unit}, not {value}"),
            );
        }
    }

    /// `path` is a power of two in `range`.
    fn power_of_two(&mut self, path: &str, value: u32, range: RangeInclusive<u32>) {
        if !value.is_power_of_two() || !range.contains(&value) {
            let (lo, hi) = range.into_inner();
            self.fail(
                path,
                format!(
                    "`{path}` must be a power of two between {lo} and {hi} (e.g. {}), not {value}",
                    value.clamp(lo, hi).next_power_of_two().min(hi)
                ),
            );
        }
    }

    fn registrar(&mut self, config: &Config) {
        let r = &config.registrar;
        match r.id {
            Some(0) => self.fail(
                "registrar.id",
                "`registrar.id` must not be 0 (on the wire 0 means \"no registrar\"); leave the \
                 key out to draw a random id at start"
                    .to_owned(),
            ),
            Some(id) if id > u64::from(u32::MAX) => {
                if let Some((path, index, url)) = first_rfc_endpoint(config) {
                    let at = self.origins.item(path, index);
                    self.fail(
                        "registrar.id",
                        format!(
                            "`registrar.id` {id} does not fit the 32-bit identifier of the RFC \
                             generation, and `{path}` has the RFC endpoint {url} ({at}); choose an \
                             id of at most {}, or use only `?generation=ng` endpoints",
                            u32::MAX
                        ),
                    );
                }
            }
            _ => {}
        }
        self.range(
            "registrar.workers",
            r.workers,
            0..=1024,
            " (0 = one per core)",
        );
        self.range(
            "registrar.busy_poll_us",
            r.busy_poll_us,
            0..=1_000_000,
            " microseconds (0 = never spin)",
        );
    }

    /// ASAP and ENRP listeners and the metrics endpoint: none may share a socket with another.
    fn listeners(&mut self, config: &Config) {
        if config.asap.listen.is_empty() {
            self.fail(
                "asap.listen",
                "`asap.listen` is empty: no PE or PU could reach the registrar; list at least one \
                 listener, e.g. [\"sctp://0.0.0.0:3863\"]"
                    .to_owned(),
            );
        }
        let mut sockets: Vec<Socket> = Vec::new();
        for (path, urls) in [
            ("asap.listen", &config.asap.listen),
            ("enrp.listen", &config.enrp.listen),
        ] {
            for (index, url) in urls.iter().enumerate() {
                sockets.push(Socket {
                    path,
                    url: Some(*url),
                    transport: url.transport,
                    address: url.address,
                    origin: self.origins.item(path, index),
                });
            }
        }
        if let Some(address) = config.metrics.address {
            sockets.push(Socket {
                path: "metrics.address",
                url: None,
                transport: Transport::Tcp,
                address,
                origin: self.origins.of("metrics.address"),
            });
        }
        // Blame the socket set in the higher layer: the value the operator set last.
        sockets.sort_by_key(|s| s.origin.source.layer());
        for (i, later) in sockets.iter().enumerate() {
            if let Some(reason) = sockets[..i]
                .iter()
                .find_map(|earlier| conflict(earlier, later))
            {
                self.problems.push(Problem {
                    origin: later.origin.clone(),
                    message: reason,
                });
            }
        }
    }

    /// Announce targets, ENRP peers and the CSP monitor are addresses to send to.
    fn destinations(&mut self, config: &Config) {
        for (index, url) in config.announce.targets.iter().enumerate() {
            if url.transport != Transport::Udp {
                self.fail_item(
                    "announce.targets",
                    index,
                    format!(
                        "`announce.targets` has {url}, but announces travel over UDP only; write \
                         udp://{}{}",
                        url.address,
                        ng_suffix(url)
                    ),
                );
            } else if let Some(why) = not_a_destination(url.address) {
                self.fail_item(
                    "announce.targets",
                    index,
                    format!("`announce.targets` has {url}, which {why}"),
                );
            }
        }
        for (index, url) in config.enrp.peers.iter().enumerate() {
            if url.transport == Transport::Udp {
                self.fail_item(
                    "enrp.peers",
                    index,
                    format!(
                        "`enrp.peers` has {url}, but peers are reached over associations; write \
                         sctp://{0}{1} or tcp://{0}{1} (presence datagrams go to \
                         `enrp.presence_targets`)",
                        url.address,
                        ng_suffix(url)
                    ),
                );
            } else if let Some(why) = not_a_destination(url.address) {
                self.fail_item(
                    "enrp.peers",
                    index,
                    format!("`enrp.peers` has {url}, which {why}"),
                );
            }
        }
        for (index, url) in config.enrp.presence_targets.iter().enumerate() {
            if url.transport != Transport::Udp {
                self.fail_item(
                    "enrp.presence_targets",
                    index,
                    format!(
                        "`enrp.presence_targets` has {url}, but presence datagrams travel over UDP \
                         only; write udp://{}{} (peers reached over associations belong in \
                         `enrp.peers`)",
                        url.address,
                        ng_suffix(url)
                    ),
                );
            } else if let Some(why) = not_a_destination(url.address) {
                self.fail_item(
                    "enrp.presence_targets",
                    index,
                    format!("`enrp.presence_targets` has {url}, which {why}"),
                );
            }
        }
        if let Some(monitor) = config.csp.monitor
            && let Some(why) = not_a_destination(monitor)
        {
            self.fail(
                "csp.monitor",
                format!(
                    "`csp.monitor` {monitor} {why}; the monitor usually listens on 127.0.0.1:2960"
                ),
            );
        }
        for (path, urls) in [
            ("announce.targets", &config.announce.targets),
            ("enrp.peers", &config.enrp.peers),
            ("enrp.presence_targets", &config.enrp.presence_targets),
        ] {
            for (index, url) in urls.iter().enumerate() {
                if let Some(first) = urls[..index].iter().position(|u| u == url) {
                    let at = self.origins.item(path, first);
                    self.fail_item(
                        path,
                        index,
                        format!("`{path}` lists {url} twice (also at {at}); remove one"),
                    );
                }
            }
        }
    }

    fn announce_and_timers(&mut self, config: &Config) {
        let ms = " milliseconds";
        self.range(
            "announce.interval_ms",
            config.announce.interval_ms,
            MILLIS,
            ms,
        );
        self.range("announce.ttl", config.announce.ttl, 0..=255, " hops");
        let t = &config.timers;
        self.range(
            "timers.keep_alive_interval_ms",
            t.keep_alive_interval_ms,
            MILLIS,
            ms,
        );
        self.range(
            "timers.keep_alive_timeout_ms",
            t.keep_alive_timeout_ms,
            MILLIS,
            ms,
        );
        self.range(
            "timers.max_bad_pe_reports",
            t.max_bad_pe_reports,
            1..=u32::MAX,
            "",
        );
        self.range("csp.interval_ms", config.csp.interval_ms, MILLIS, ms);
        let r = &config.resolution;
        let items = 1..=MAX_SELECTION;
        self.range("resolution.max_items", r.max_items, items.clone(), " PEs");
        if items.contains(&r.max_items) && !(1..=r.max_items).contains(&r.default_items) {
            let at = self.origins.of("resolution.max_items");
            self.fail(
                "resolution.default_items",
                format!(
                    "`resolution.default_items` must be between 1 and `resolution.max_items` ({}, \
                     set at {at}), not {}",
                    r.max_items, r.default_items
                ),
            );
        }
    }

    /// The scope's timers: each in range, and a peer is not probed before it could have sent
    /// its next presence.
    fn enrp(&mut self, config: &Config) {
        let ms = " milliseconds";
        let e = &config.enrp;
        for (path, value) in [
            ("enrp.heartbeat_interval_ms", e.heartbeat_interval_ms),
            ("enrp.max_time_last_heard_ms", e.max_time_last_heard_ms),
            ("enrp.max_time_no_response_ms", e.max_time_no_response_ms),
            (
                "enrp.mentor_discovery_timeout_ms",
                e.mentor_discovery_timeout_ms,
            ),
            ("enrp.takeover_expiry_ms", e.takeover_expiry_ms),
            ("enrp.reconnect_interval_ms", e.reconnect_interval_ms),
        ] {
            self.range(path, value, MILLIS, ms);
        }
        if MILLIS.contains(&e.heartbeat_interval_ms)
            && MILLIS.contains(&e.max_time_last_heard_ms)
            && e.max_time_last_heard_ms < e.heartbeat_interval_ms
        {
            let at = self.origins.of("enrp.heartbeat_interval_ms");
            self.fail(
                "enrp.max_time_last_heard_ms",
                format!(
                    "`enrp.max_time_last_heard_ms` {} is shorter than \
                     `enrp.heartbeat_interval_ms` {} (set at {at}): every peer would be probed \
                     before its next presence; make it at least the heartbeat interval (the RFC \
                     uses about twice: 61 s against 30 s)",
                    e.max_time_last_heard_ms, e.heartbeat_interval_ms
                ),
            );
        }
        self.range(
            "enrp.max_pes_per_table_response",
            e.max_pes_per_table_response,
            1..=4096,
            " PEs",
        );
    }

    fn limits(&mut self, config: &Config) {
        let l = &config.limits;
        for (path, value) in [
            ("limits.max_pools", l.max_pools),
            ("limits.max_pes_per_pool", l.max_pes_per_pool),
            ("limits.max_pes_per_association", l.max_pes_per_association),
            ("limits.max_connections", l.max_connections),
        ] {
            if value == 0 {
                self.fail(path, format!("`{path}` must be at least 1, not 0"));
            }
        }
        self.range(
            "limits.max_message_size",
            l.max_message_size,
            MESSAGE_SIZE,
            " bytes",
        );
        self.range(
            "limits.max_buffered_bytes_per_connection",
            l.max_buffered_bytes_per_connection,
            65_536..=1 << 30,
            " bytes",
        );
        if l.max_pool_handle_len < 32 {
            self.fail(
                "limits.max_pool_handle_len",
                format!(
                    "`limits.max_pool_handle_len` must be at least 32 bytes, the length RFC \
                     listeners accept, not {}",
                    l.max_pool_handle_len
                ),
            );
        } else if l.max_pool_handle_len >= l.max_message_size
            && MESSAGE_SIZE.contains(&l.max_message_size)
        {
            let at = self.origins.of("limits.max_message_size");
            self.fail(
                "limits.max_pool_handle_len",
                format!(
                    "`limits.max_pool_handle_len` {} bytes leaves no room in a message of \
                     `limits.max_message_size` {} bytes (set at {at}); lower the one or raise \
                     the other",
                    l.max_pool_handle_len, l.max_message_size
                ),
            );
        }
    }

    /// Subscriptions: a push interval of at most a minute, and a limit per association that
    /// the total limit leaves room for.
    fn subscriptions(&mut self, config: &Config) {
        let s = &config.subscriptions;
        self.range(
            "subscriptions.min_push_interval_ms",
            s.min_push_interval_ms,
            0..=60_000,
            " ms (0 = push every change at once)",
        );
        if s.max_total > 0 && s.max_per_association > s.max_total {
            let at = self.origins.of("subscriptions.max_total");
            self.fail(
                "subscriptions.max_per_association",
                format!(
                    "`subscriptions.max_per_association` {} exceeds `subscriptions.max_total` {} \
                     (set at {at}): no association could reach it; lower the one or raise the \
                     other (0 in either turns subscriptions off)",
                    s.max_per_association, s.max_total
                ),
            );
        }
    }

    /// TLS URLs need the certificate and key, listeners that verify client certificates and
    /// ENRP peers over TLS need the CA bundle, and every file named must load.
    fn tls(&mut self, config: &Config) {
        use rserpool_protocol::url::ClientCertificate;
        let t = &config.tls;
        let urls = [
            ("asap.listen", &config.asap.listen),
            ("enrp.listen", &config.enrp.listen),
            ("enrp.peers", &config.enrp.peers),
        ];
        let mut needs_server = None;
        for (path, list) in urls {
            for (i, url) in list.iter().enumerate() {
                let Some(asks) = url.tls else { continue };
                if path != "enrp.peers" && needs_server.is_none() {
                    needs_server = Some((path, i, *url));
                }
                let verifies = path == "enrp.peers" || asks != ClientCertificate::None;
                if verifies && t.ca.is_empty() {
                    self.fail_item(
                        path,
                        i,
                        format!(
                            "`{url}` verifies the peer's certificate, which needs `tls.ca` (the \
                             CA bundle, PEM); set it, or use client_certificate=none on a \
                             listener"
                        ),
                    );
                }
            }
        }
        if let Some((path, i, url)) = needs_server
            && (t.certificate.is_empty() || t.private_key.is_empty())
        {
            self.fail_item(
                path,
                i,
                format!(
                    "`{url}` serves TLS, which needs `tls.certificate` and `tls.private_key` (PEM \
                     files); set both"
                ),
            );
            return;
        }
        if !t.certificate.is_empty()
            && let Err(e) = rserpool_net::ServerTls::load(&t.files())
        {
            self.fail("tls.certificate", e.to_string());
        } else if t.certificate.is_empty()
            && !t.ca.is_empty()
            && let Err(e) = rserpool_net::ClientTls::load(&t.files())
        {
            self.fail("tls.ca", e.to_string());
        }
    }

    fn io(&mut self, config: &Config) {
        let io = &config.io;
        self.power_of_two("io.ring_entries", io.ring_entries, 8..=32768);
        self.power_of_two("io.buffer_count", io.buffer_count, 1..=32768);
        self.range("io.buffer_size", io.buffer_size, 64..=1 << 20, " bytes");
        let message_size = config.limits.max_message_size;
        if io.buffer_size < message_size && MESSAGE_SIZE.contains(&message_size) {
            let at = self.origins.of("limits.max_message_size");
            self.fail(
                "io.buffer_size",
                format!(
                    "`io.buffer_size` {} bytes is smaller than `limits.max_message_size` {} bytes \
                     (set at {at}): a UDP or SCTP message that large would be cut short; raise \
                     the one or lower the other",
                    io.buffer_size, message_size
                ),
            );
        }
        let per_worker = io.buffer_size as u128 * u128::from(io.buffer_count);
        if per_worker > 1 << 32 {
            self.fail(
                "io.buffer_count",
                format!(
                    "`io.buffer_count` {} × `io.buffer_size` {} is {} MiB of receive buffers per \
                     worker, more than the 4096 MiB allowed; lower one of them",
                    io.buffer_count,
                    io.buffer_size,
                    per_worker >> 20
                ),
            );
        }
        if io.socket_buffer_bytes != 0 {
            self.range(
                "io.socket_buffer_bytes",
                io.socket_buffer_bytes,
                4096..=1 << 30,
                " bytes (or 0 for the kernel's default)",
            );
        }
        self.range("io.listen_backlog", io.listen_backlog, 1..=65535, "");
        self.range("io.max_batch", io.max_batch, 1..=65536, "");
    }

    fn log(&mut self, config: &Config) {
        let level = config.log.level.trim();
        let example = "write e.g. \"info\" or \"info,rserpool_registrar=debug\"";
        if level.is_empty() {
            self.fail("log.level", format!("`log.level` is empty; {example}"));
            return;
        }
        if let Err(e) = EnvFilter::try_new(level) {
            self.fail(
                "log.level",
                format!("`log.level` \"{level}\" is not a valid filter ({e}); {example}"),
            );
            return;
        }
        let bare = level.split(',').map(str::trim).find(|d| {
            !d.is_empty() && !d.contains(['=', '[']) && LevelFilter::from_str(d).is_err()
        });
        if let Some(word) = bare {
            self.fail(
                "log.level",
                format!(
                    "`log.level` has `{word}`, which is no level (off, error, warn, info, debug, \
                     trace): the filter would read it as the name of a log target; to filter one \
                     target write `{word}=debug`, else {example}"
                ),
            );
        }
    }
}

/// A socket the registrar would listen on.
struct Socket {
    /// The key that configured it.
    path: &'static str,
    /// The URL, for a listener.
    url: Option<TransportUrl>,
    /// Its transport (TCP for the metrics endpoint).
    transport: Transport,
    /// Its address.
    address: SocketAddr,
    /// Where it was configured.
    origin: Origin,
}

impl Socket {
    /// How the socket is named in messages.
    fn name(&self) -> String {
        match self.url {
            Some(url) => format!("`{}` {url}", self.path),
            None => format!("`{}` {}", self.path, self.address),
        }
    }
}

/// Why `b` cannot listen beside `a`, if it cannot.
fn conflict(a: &Socket, b: &Socket) -> Option<String> {
    let kernel_protocol = |t: Transport| match t {
        Transport::Sctp => "sctp",
        Transport::Tcp | Transport::Mptcp => "tcp",
        // SCTP in UDP binds a UDP port.
        Transport::Udp | Transport::SctpUdp => "udp",
    };
    if kernel_protocol(a.transport) != kernel_protocol(b.transport)
        || a.address.port() != b.address.port()
        || a.address.port() == 0
    {
        return None;
    }
    let (x, y) = (a.address.ip(), b.address.ip());
    let same_ip = x == y;
    let wildcard = (x.is_unspecified() || y.is_unspecified()) && x.is_ipv4() == y.is_ipv4();
    if !same_ip && !wildcard {
        return None;
    }
    let (first, second, at) = (a.name(), b.name(), &a.origin);
    let reason = if !same_ip {
        "a wildcard address already takes that port on every address; keep one of the two"
    } else if a.url.is_none() || b.url.is_none() {
        "the metrics endpoint needs a TCP port of its own; move it to another port"
    } else if a.path != b.path {
        "ASAP and ENRP need a port each (RFC: ASAP 3863, ENRP 9901; NG: 13863, 19901)"
    } else if a.url == b.url {
        return Some(format!(
            "{second} is listed twice (also at {at}); remove one"
        ));
    } else if a.transport != b.transport {
        "an MPTCP listener also accepts plain TCP clients, so a TCP and an MPTCP listener cannot \
         share an address and port; keep only the mptcp:// one"
    } else {
        "one socket speaks one wire generation; give the NG listener its own port (NG: ASAP 13863, \
         ENRP 19901)"
    };
    Some(format!(
        "{second} conflicts with {first} (at {at}): {reason}"
    ))
}

/// Why `address` cannot be sent to, if it cannot.
fn not_a_destination(address: SocketAddr) -> Option<&'static str> {
    if address.port() == 0 {
        Some("has port 0; give the port to send to")
    } else if address.ip().is_unspecified() {
        Some("has the wildcard address; give the address to send to")
    } else {
        None
    }
}

/// `?generation=ng` for an NG URL, else nothing.
fn ng_suffix(url: &TransportUrl) -> &'static str {
    match url.generation {
        Generation::Ng => "?generation=ng",
        Generation::Rfc => "",
    }
}

/// The first endpoint that speaks the RFC generation (32-bit identifiers): its key, its index and
/// its URL.
fn first_rfc_endpoint(config: &Config) -> Option<(&'static str, usize, TransportUrl)> {
    [
        ("asap.listen", &config.asap.listen),
        ("enrp.listen", &config.enrp.listen),
        ("enrp.peers", &config.enrp.peers),
        ("announce.targets", &config.announce.targets),
    ]
    .into_iter()
    .find_map(|(path, urls)| {
        urls.iter()
            .position(|u| u.generation == Generation::Rfc)
            .map(|i| (path, i, urls[i]))
    })
}
