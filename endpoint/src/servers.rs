//! The registrars an endpoint knows and how it finds a home registrar (RFC 5352 §3.6): the
//! configured list plus addresses learnt from ASAP_SERVER_ANNOUNCE (each with a T7 expiry), and
//! the server hunt (SH1-SH6) that both the PE and the PU core run. Sans-I/O: connection attempts
//! leave as [`Action::Connect`] and come back as outcomes.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use rserpool_protocol::{AsapMessage, Generation, PrId, TransportKind};

use crate::{Action, ConnId, ConnectFailure, Millis, Registrar, StreamTransport, Timers};

/// SH1: an endpoint never tries more than 3 registrars at once (RFC 5352 §3.6).
pub const MAX_PARALLEL_CONNECTS: usize = 3;

/// A known registrar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    /// Where it is.
    pub registrar: Registrar,
    /// When a learnt entry expires (T7); `None` for configured ones.
    pub expires: Option<Millis>,
    /// The server ID it announced, if it did.
    pub server_id: Option<PrId>,
}

/// The UDP port of SCTP over UDP (RFC 6951 §5.1's assignment), where an announced registrar is
/// reached over `sctp+udp`.
const SCTP_UDP_PORT: u16 = 9899;

/// The registrars an endpoint may use: configured ones first, in their order, then learnt ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerList {
    entries: Vec<Known>,
}

/// How an endpoint turns ASAP_SERVER_ANNOUNCEs into registrars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceSettings {
    /// The wire generation the announces are in.
    pub generation: Generation,
    /// How to reach an announced registrar: SCTP takes its SCTP transports, TCP and MPTCP its TCP
    /// ones (a registrar's MPTCP listener is announced as TCP); SCTP over UDP takes its SCTP
    /// transports' addresses at UDP port 9899 (RFC 6951's: an announce carries no UDP port).
    pub transport: StreamTransport,
    /// The port for an announce without transport parameters: `None` = the datagram's source
    /// port (RSPLIB), `Some(p)` = `p` (the RFC says the ASAP port, 3863).
    pub default_port: Option<u16>,
}

impl ServerList {
    /// A list of configured registrars, which never expire.
    pub fn configured(registrars: &[Registrar]) -> Self {
        let mut list = Self::default();
        for r in registrars {
            if !list.entries.iter().any(|k| k.registrar == *r) {
                list.entries.push(Known {
                    registrar: *r,
                    expires: None,
                    server_id: None,
                });
            }
        }
        list
    }

    /// Every known registrar, configured ones first.
    pub fn entries(&self) -> &[Known] {
        &self.entries
    }

    /// Whether `registrar` is known.
    pub fn contains(&self, registrar: &Registrar) -> bool {
        self.entries.iter().any(|k| k.registrar == *registrar)
    }

    /// Adds a learnt registrar with a fresh T7, or restarts T7 of a known learnt one
    /// (RFC 5352 §3.6). Returns whether it is new.
    pub fn learn(
        &mut self,
        registrar: Registrar,
        server_id: PrId,
        now: Millis,
        t7: Millis,
    ) -> bool {
        if let Some(k) = self.entries.iter_mut().find(|k| k.registrar == registrar) {
            if k.expires.is_some() {
                k.expires = Some(now + t7);
            }
            k.server_id = Some(server_id);
            return false;
        }
        self.entries.push(Known {
            registrar,
            expires: Some(now + t7),
            server_id: Some(server_id),
        });
        true
    }

    /// RFC 5352 §3.6: an ASAP_SERVER_ANNOUNCE from `from`. Every transport it lists of the kind
    /// `settings.transport` reaches (SCTP for SCTP, TCP for TCP and MPTCP) becomes a registrar;
    /// without any transport parameter the source address is used. Returns how many registrars
    /// are new, or `None` if the datagram is not an announce.
    pub fn on_announce(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Millis,
        t7: Millis,
        settings: &AnnounceSettings,
    ) -> Option<usize> {
        let decoded = AsapMessage::decode(datagram, settings.generation).ok()?;
        let AsapMessage::ServerAnnounce {
            server_id,
            transports,
        } = decoded.message
        else {
            return None;
        };
        let (kind, udp_port) = match settings.transport {
            StreamTransport::Sctp => (TransportKind::Sctp, None),
            StreamTransport::SctpUdp => (TransportKind::Sctp, Some(SCTP_UDP_PORT)),
            StreamTransport::Tcp | StreamTransport::Mptcp => (TransportKind::Tcp, None),
        };
        let mut found: Vec<SocketAddr> = Vec::new();
        for t in transports.iter().filter(|t| t.kind == kind) {
            found.extend(
                t.addresses
                    .iter()
                    .map(|ip: IpAddr| SocketAddr::new(ip, udp_port.unwrap_or(t.port))),
            );
        }
        if transports.is_empty() {
            let port = udp_port.unwrap_or(settings.default_port.unwrap_or(from.port()));
            found.push((from.ip(), port).into());
        }
        let mut new = 0;
        for address in found {
            // An announce names plain transports only.
            let registrar = Registrar {
                transport: settings.transport,
                address,
                tls: false,
            };
            new += usize::from(self.learn(registrar, server_id, now, t7));
        }
        Some(new)
    }

    /// Drops learnt registrars whose T7 ran out by `now`.
    pub fn expire(&mut self, now: Millis) {
        self.entries.retain(|k| k.expires.is_none_or(|t| t > now));
    }

    /// The earliest T7 expiry.
    pub fn next_expiry(&self) -> Option<Millis> {
        self.entries.iter().filter_map(|k| k.expires).min()
    }
}

/// The server hunt (RFC 5352 §3.6 SH1-SH6) over a [`ServerList`].
#[derive(Clone, Debug)]
pub struct Hunt {
    list: ServerList,
    timers: Timers,
    next_conn: u64,
    /// Connection attempts under way.
    attempts: Vec<(ConnId, Registrar)>,
    /// Registrars tried in this round.
    tried: Vec<Registrar>,
    /// Failures of this round.
    failures: Vec<ConnectFailure>,
    /// Where the next candidate search starts in the list (rotates, so a new round tries a
    /// different set first: SH5).
    cursor: usize,
    t5: Millis,
    deadline: Option<Millis>,
    round_failed: bool,
}

/// What a connection outcome meant to the hunt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HuntOutcome {
    /// Not a hunt connection, or nothing decided yet.
    Pending,
    /// SH3/SH6: the hunt found a registrar; the others' attempts were abandoned.
    Found(Registrar),
    /// Every registrar of this round failed; the hunt waits for T5 before the next round.
    RoundFailed(Vec<ConnectFailure>),
}

impl Hunt {
    /// A hunt over `list` with the endpoint's timers; idle until [`Self::start`].
    pub fn new(list: ServerList, timers: Timers) -> Self {
        Self {
            list,
            timers,
            next_conn: 0,
            attempts: Vec::new(),
            tried: Vec::new(),
            failures: Vec::new(),
            cursor: 0,
            t5: timers.t5_server_hunt.max(1),
            deadline: None,
            round_failed: false,
        }
    }

    /// The registrars known.
    pub fn list(&self) -> &ServerList {
        &self.list
    }

    /// Whether a hunt is under way.
    pub fn is_active(&self) -> bool {
        self.deadline.is_some()
    }

    /// The current T5.
    pub fn t5(&self) -> Millis {
        self.t5
    }

    /// The attempts under way.
    pub fn attempts(&self) -> impl Iterator<Item = (ConnId, Registrar)> + '_ {
        self.attempts.iter().copied()
    }

    /// SH1/SH2: starts a hunt unless one is under way. The first candidates are the registrars
    /// after `after` in the list (failover to the next registrar), wrapping around.
    pub fn start<E>(
        &mut self,
        now: Millis,
        after: Option<Registrar>,
        out: &mut VecDeque<Action<E>>,
    ) -> HuntOutcome {
        if self.is_active() {
            return HuntOutcome::Pending;
        }
        if let Some(i) = after.and_then(|a| self.list.entries.iter().position(|k| k.registrar == a))
        {
            self.cursor = i + 1;
        }
        self.tried.clear();
        self.failures.clear();
        self.round_failed = false;
        self.deadline = Some(now + self.t5);
        self.launch(out)
    }

    /// Stops the hunt and abandons its attempts.
    pub fn stop<E>(&mut self, out: &mut VecDeque<Action<E>>) {
        for (conn, _) in self.attempts.drain(..) {
            out.push_back(Action::Close { conn });
        }
        self.deadline = None;
    }

    /// SH1/SH4: starts attempts at untried registrars up to the limit of parallel attempts.
    fn launch<E>(&mut self, out: &mut VecDeque<Action<E>>) -> HuntOutcome {
        let limit = self
            .timers
            .max_parallel_connects
            .clamp(1, MAX_PARALLEL_CONNECTS);
        let n = self.list.entries.len();
        let mut looked = 0;
        while self.attempts.len() < limit && looked < n {
            let k = &self.list.entries[self.cursor % n];
            self.cursor = (self.cursor + 1) % n;
            looked += 1;
            if self.tried.contains(&k.registrar) {
                continue;
            }
            let registrar = k.registrar;
            self.tried.push(registrar);
            self.next_conn += 1;
            let conn = ConnId(self.next_conn);
            self.attempts.push((conn, registrar));
            out.push_back(Action::Connect { conn, registrar });
        }
        if self.attempts.is_empty() && !self.round_failed {
            self.round_failed = true;
            return HuntOutcome::RoundFailed(self.failures.clone());
        }
        HuntOutcome::Pending
    }

    /// SH3/SH6: a connection attempt succeeded. The first success ends the hunt, resets T5 and
    /// abandons the other attempts.
    pub fn on_connected<E>(&mut self, conn: ConnId, out: &mut VecDeque<Action<E>>) -> HuntOutcome {
        let Some(i) = self.attempts.iter().position(|(c, _)| *c == conn) else {
            return HuntOutcome::Pending;
        };
        let (_, registrar) = self.attempts.remove(i);
        self.stop(out);
        self.t5 = self.timers.t5_server_hunt.max(1);
        HuntOutcome::Found(registrar)
    }

    /// SH4: a connection attempt failed; try another registrar.
    pub fn on_connect_failed<E>(
        &mut self,
        conn: ConnId,
        error: String,
        out: &mut VecDeque<Action<E>>,
    ) -> Option<(ConnectFailure, HuntOutcome)> {
        let i = self.attempts.iter().position(|(c, _)| *c == conn)?;
        let (_, registrar) = self.attempts.remove(i);
        let failure = ConnectFailure { registrar, error };
        self.failures.push(failure.clone());
        Some((failure, self.launch(out)))
    }

    /// Learns from an announce; a hunt waiting for its next round tries new registrars at once.
    pub fn on_announce<E>(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Millis,
        settings: &AnnounceSettings,
        out: &mut VecDeque<Action<E>>,
    ) -> HuntOutcome {
        let t7 = self.timers.t7_announce;
        match self.list.on_announce(from, datagram, now, t7, settings) {
            Some(new) if new > 0 && self.is_active() => {
                self.round_failed = false;
                self.launch(out)
            }
            _ => HuntOutcome::Pending,
        }
    }

    /// The next time [`Self::on_timeout`] has work: T5 or a T7 expiry.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match (self.deadline, self.list.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// T7 expiries; SH5: on T5 expiry double T5 (up to RETRAN-MAX), abandon the pending
    /// attempts and start a new round with a different set.
    pub fn on_timeout<E>(&mut self, now: Millis, out: &mut VecDeque<Action<E>>) -> HuntOutcome {
        self.list.expire(now);
        match self.deadline {
            Some(deadline) if deadline <= now => {
                self.stop(out);
                self.t5 = (self.t5.saturating_mul(2)).min(self.timers.retran_max.max(1));
                self.tried.clear();
                self.failures.clear();
                self.round_failed = false;
                self.deadline = Some(now + self.t5);
                self.launch(out)
            }
            _ => HuntOutcome::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use rserpool_protocol::{Seq, TransportParam};

    use super::*;

    type Out = VecDeque<Action<()>>;

    fn reg(port: u16) -> Registrar {
        Registrar::tcp(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn connects(out: &mut Out) -> Vec<(ConnId, u16)> {
        let mut v = Vec::new();
        for a in out.drain(..) {
            if let Action::Connect { conn, registrar } = a {
                v.push((conn, registrar.address.port()));
            }
        }
        v
    }

    fn announce(server_id: u64, transports: &[TransportParam<'_>]) -> Vec<u8> {
        crate::encode(
            &AsapMessage::ServerAnnounce {
                server_id: PrId(server_id),
                transports: Seq::from_items(transports),
            },
            Generation::Rfc,
        )
        .unwrap()
    }

    /// Checklist PU-01, RFC 5352 §3.6 SH1-SH5.
    #[test]
    fn never_more_than_three_attempts_and_t5_doubles_up_to_retran_max() {
        let list = ServerList::configured(&[reg(1), reg(2), reg(3), reg(4), reg(5)]);
        let mut hunt = Hunt::new(list, Timers::default());
        let mut out = Out::new();
        hunt.start(0, None, &mut out);
        let first = connects(&mut out);
        assert_eq!(
            first.iter().map(|c| c.1).collect::<Vec<_>>(),
            [1, 2, 3],
            "SH1: three at once"
        );
        // SH4: a failure starts another attempt, still three at most.
        let (failure, outcome) = hunt
            .on_connect_failed(first[0].0, "refused".into(), &mut out)
            .unwrap();
        assert_eq!(failure.registrar, reg(1));
        assert_eq!(outcome, HuntOutcome::Pending);
        assert_eq!(
            connects(&mut out).iter().map(|c| c.1).collect::<Vec<_>>(),
            [4]
        );
        assert_eq!(hunt.attempts().count(), 3);
        // SH5: T5 expiry abandons the attempts and doubles T5, up to RETRAN-MAX.
        assert_eq!(hunt.poll_timeout(), Some(10_000));
        hunt.on_timeout(10_000, &mut out);
        let closed = out
            .iter()
            .filter(|a| matches!(a, Action::Close { .. }))
            .count();
        assert_eq!(closed, 3);
        let second = connects(&mut out);
        assert_eq!(second.len(), 3);
        assert_eq!(second[0].1, 5, "the new round starts with a different set");
        assert_eq!(hunt.t5(), 20_000);
        for expected in [40_000, 60_000, 60_000] {
            let now = hunt.poll_timeout().unwrap();
            hunt.on_timeout(now, &mut out);
            assert_eq!(hunt.t5(), expected);
            assert!(hunt.attempts().count() <= 3);
            out.clear();
        }
        // SH3: the first success stops the hunt, resets T5, abandons the rest.
        let (conn, _) = hunt.attempts().next().unwrap();
        let outcome = hunt.on_connected(conn, &mut out);
        assert!(matches!(outcome, HuntOutcome::Found(_)));
        assert!(!hunt.is_active());
        assert_eq!(hunt.t5(), 10_000);
        assert_eq!(
            out.iter()
                .filter(|a| matches!(a, Action::Close { .. }))
                .count(),
            2
        );
        assert!(hunt.poll_timeout().is_none());
    }

    #[test]
    fn a_round_where_every_registrar_fails_is_reported_once_with_each_error() {
        let mut hunt = Hunt::new(ServerList::configured(&[reg(1), reg(2)]), Timers::default());
        let mut out = Out::new();
        hunt.start(0, Some(reg(1)), &mut out);
        let c = connects(&mut out);
        assert_eq!(
            c.iter().map(|c| c.1).collect::<Vec<_>>(),
            [2, 1],
            "failover order"
        );
        let (_, o) = hunt
            .on_connect_failed(c[0].0, "e2".into(), &mut out)
            .unwrap();
        assert_eq!(o, HuntOutcome::Pending);
        let (_, o) = hunt
            .on_connect_failed(c[1].0, "e1".into(), &mut out)
            .unwrap();
        let HuntOutcome::RoundFailed(failures) = o else {
            panic!("{o:?}")
        };
        assert_eq!(
            failures
                .iter()
                .map(|f| f.error.as_str())
                .collect::<Vec<_>>(),
            ["e2", "e1"]
        );
        assert!(hunt.is_active(), "the hunt waits for T5");
        assert!(
            hunt.on_connect_failed(c[1].0, "again".into(), &mut out)
                .is_none()
        );
        let empty = &mut Hunt::new(ServerList::default(), Timers::default());
        assert_eq!(
            empty.start(0, None, &mut out),
            HuntOutcome::RoundFailed(vec![])
        );
    }

    /// Checklist PU-02: announces add registrars with a T7 expiry; without transport parameters
    /// the source address is used.
    #[test]
    fn announces_add_registrars_that_expire_after_t7() {
        let mut list = ServerList::configured(&[reg(1)]);
        let settings = AnnounceSettings {
            generation: Generation::Rfc,
            transport: StreamTransport::Tcp,
            default_port: None,
        };
        let ip = [IpAddr::from([127, 0, 0, 9])];
        let tcp = TransportParam {
            kind: TransportKind::Tcp,
            port: 3863,
            transport_use: 0,
            service_code: 0,
            addresses: Seq::from_items(&ip),
        };
        let sctp = TransportParam {
            kind: TransportKind::Sctp,
            ..tcp
        };
        let from: SocketAddr = "127.0.0.7:4000".parse().unwrap();
        assert_eq!(
            list.on_announce(from, &announce(5, &[sctp, tcp]), 100, 5_000, &settings),
            Some(1)
        );
        assert!(list.contains(&Registrar::tcp("127.0.0.9:3863".parse().unwrap())));
        assert_eq!(list.entries().len(), 2, "the SCTP transport is skipped");
        // An endpoint that speaks SCTP takes the SCTP transport instead.
        let mut over_sctp = ServerList::default();
        let sctp_settings = AnnounceSettings {
            transport: StreamTransport::Sctp,
            ..settings
        };
        let sctp_only = TransportParam { port: 3864, ..sctp };
        assert_eq!(
            over_sctp.on_announce(
                from,
                &announce(5, &[sctp_only, tcp]),
                0,
                5_000,
                &sctp_settings
            ),
            Some(1)
        );
        assert_eq!(
            over_sctp.entries()[0].registrar,
            Registrar::sctp("127.0.0.9:3864".parse().unwrap())
        );
        // Over SCTP over UDP, the SCTP transport's addresses at RFC 6951's UDP port.
        let mut over_udp = ServerList::default();
        let udp_settings = AnnounceSettings {
            transport: StreamTransport::SctpUdp,
            ..settings
        };
        assert_eq!(
            over_udp.on_announce(
                from,
                &announce(5, &[sctp_only, tcp]),
                0,
                5_000,
                &udp_settings
            ),
            Some(1)
        );
        assert_eq!(
            over_udp.entries()[0].registrar,
            Registrar::sctp_udp("127.0.0.9:9899".parse().unwrap())
        );
        assert_eq!(list.entries()[1].server_id, Some(PrId(5)));
        // Without transports: the source address and port.
        assert_eq!(
            list.on_announce(from, &announce(6, &[]), 200, 5_000, &settings),
            Some(1)
        );
        assert!(list.contains(&Registrar::tcp(from)));
        // With a fixed default port (the RFC's ASAP port).
        let rfc = AnnounceSettings {
            default_port: Some(3863),
            ..settings
        };
        list.on_announce(from, &announce(6, &[]), 200, 5_000, &rfc);
        assert!(list.contains(&Registrar::tcp("127.0.0.7:3863".parse().unwrap())));
        // A repeated announce restarts T7; expiry drops learnt entries only.
        assert_eq!(
            list.on_announce(from, &announce(6, &[]), 4_000, 5_000, &settings),
            Some(0)
        );
        assert_eq!(list.next_expiry(), Some(5_100));
        list.expire(5_100);
        assert!(!list.contains(&Registrar::tcp("127.0.0.9:3863".parse().unwrap())));
        assert!(list.contains(&Registrar::tcp(from)));
        list.expire(9_000);
        assert_eq!(list.entries().len(), 1);
        assert_eq!(list.entries()[0].registrar, reg(1), "configured ones stay");
        assert_eq!(list.on_announce(from, b"junk", 0, 1, &settings), None);
    }

    #[test]
    fn a_hunt_waiting_for_its_next_round_tries_an_announced_registrar_at_once() {
        let mut hunt = Hunt::new(ServerList::default(), Timers::default());
        let mut out = Out::new();
        assert_eq!(
            hunt.start(0, None, &mut out),
            HuntOutcome::RoundFailed(vec![])
        );
        let settings = AnnounceSettings {
            generation: Generation::Rfc,
            transport: StreamTransport::Mptcp,
            default_port: None,
        };
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        hunt.on_announce(from, &announce(1, &[]), 10, &settings, &mut out);
        let Some(Action::Connect { registrar, .. }) = out.pop_front() else {
            panic!("no attempt")
        };
        assert_eq!(registrar, Registrar::mptcp(from));
    }
}
