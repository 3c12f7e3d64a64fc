//! The pool element's ASAP procedures (RFC 5352 §3.1-§3.4, §3.6) as a sans-I/O state machine:
//! registration with T2 and MAX-REG-ATTEMPT, periodic re-registration (T4) and re-registration
//! for load updates, keep-alive answers (KA1-KA2) and home-PR changes, deregistration (T3),
//! failover to the next registrar when the association dies. No clock, no socket: feed it the
//! connection outcomes, received messages and time, and carry out its [`Action`]s.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use rserpool_protocol::{
    AsapMessage, Generation, OperationError, PeId, Policy, PoolElementParam as WirePe, PoolHandle,
    PrId, Seq, TransportKind, TransportParam, UserTransport,
};

use crate::servers::{AnnounceSettings, Hunt, HuntOutcome, ServerList};
use crate::{
    Action, Cause, ConnId, ConnectFailure, Error, Millis, Registrar, Rng, StreamTransport, Timers,
};

/// The longest registration life the wire carries (i32 milliseconds).
const MAX_LIFE: Millis = i32::MAX as Millis;

/// The user transport a PE registers (RFC 5352 §3.1 R2: exactly one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserTransportSpec {
    /// The protocol users reach the PE with.
    pub kind: TransportKind,
    /// The PE's port.
    pub port: u16,
    /// Its addresses; empty = the local address of the connection to the registrar (the
    /// registered addresses must belong to the association, RFC 5352 §2.2.1).
    pub addresses: Vec<IpAddr>,
    /// Data only (0) or data plus control channel (1), RFC 5354 §3.4.
    pub transport_use: u16,
}

/// A pool element's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The configured registrars, in failover order.
    pub registrars: Vec<Registrar>,
    /// The wire generation of the registrars (RFC: 32-bit PE IDs; NG: 64-bit).
    pub generation: Generation,
    /// The pool to join.
    pub pool_handle: Vec<u8>,
    /// Where users reach the PE.
    pub transport: UserTransportSpec,
    /// The member-selection policy with this PE's values (load, weight, ...).
    pub policy: Policy,
    /// Registration life in milliseconds (RSPLIB and NG unit).
    pub registration_life: Millis,
    /// T4; `None` = RFC 5352 §3.1: min(10 min, life − 20 s), but at least a third of the life.
    pub reregistration_interval: Option<Millis>,
    /// The PE identifier; `None` = a random non-zero one of the generation's width.
    pub pe_id: Option<PeId>,
    /// RFC 5352 §7 timers.
    pub timers: Timers,
    /// How to reach registrars learnt from announces.
    pub announce_transport: StreamTransport,
    /// Port of an announce without transport parameters (`None` = its source port).
    pub announce_default_port: Option<u16>,
}

impl Config {
    /// A PE of the RFC generation in `pool_handle`, reachable over TCP at port 0 of the
    /// connection's local address, round robin, 60 s registration life, RFC timers.
    pub fn new(registrars: Vec<Registrar>, pool_handle: impl Into<Vec<u8>>) -> Self {
        Self {
            registrars,
            generation: Generation::Rfc,
            pool_handle: pool_handle.into(),
            transport: UserTransportSpec {
                kind: TransportKind::Tcp,
                port: 0,
                addresses: Vec::new(),
                transport_use: rserpool_protocol::TRANSPORT_USE_DATA_ONLY,
            },
            policy: Policy::RoundRobin,
            registration_life: 60_000,
            reregistration_interval: None,
            pe_id: None,
            timers: Timers::default(),
            announce_transport: StreamTransport::Tcp,
            announce_default_port: None,
        }
    }
}

/// RFC 5352 §3.1: T4 = min(10 min, registration life − 20 s). For lives under 30 s that leaves
/// too little; RSPLIB's ratio (life = 3 × interval) is the floor.
pub fn rfc_reregistration_interval(life: Millis) -> Millis {
    life.saturating_sub(20_000).max(life / 3).clamp(1, 600_000)
}

/// Why a PE's registration went away without it asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// The connection to the registrar closed (the registrar removes the PE with it).
    ConnectionClosed,
    /// The registrar said its registration life ran out (unsolicited
    /// ASAP_DEREGISTRATION_RESPONSE, RFC 5352 §3.2).
    Expired,
}

/// What a PE tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeEvent {
    /// A registrar accepted the (re-)registration.
    Registered {
        /// The registrar.
        registrar: Registrar,
        /// Whether the PE had been registered before (a re-registration, maybe after failover).
        reregistration: bool,
    },
    /// A registrar refused a registration (RFC 5352 §3.1; never retried unchanged). `kept`: a
    /// re-registration with new values was refused and the PE stays registered with its previous
    /// values; otherwise the PE stopped ([`PeState::Failed`]).
    Rejected {
        /// The error with the registrar's cause.
        error: Error,
        /// Whether the PE stays registered.
        kept: bool,
    },
    /// The registration was lost; the PE registers again (at the next registrar of its list for
    /// a closed connection).
    RegistrationLost {
        /// The registrar that held it.
        registrar: Registrar,
        /// Why.
        reason: LossReason,
    },
    /// A keep-alive with H=1 from another registrar: it is the PE's home PR now (RFC 5352 §3.4
    /// KA2).
    HomeChanged {
        /// The new home PR.
        server_id: PrId,
    },
    /// A connection attempt of the server hunt failed.
    ConnectFailed(ConnectFailure),
    /// Every registrar of a server hunt round failed; the hunt goes on after T5 while the PE is
    /// active.
    ServerHuntFailed(Vec<ConnectFailure>),
    /// The PE deregistered (or had never been registered when asked to).
    Deregistered,
    /// The PE gave up: MAX-REG-ATTEMPT exhausted, a refused deregistration, or no registrar
    /// reachable while deregistering.
    Failed(Error),
}

/// Where a PE stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeState {
    /// Not started.
    Idle,
    /// Looking for a registrar or waiting for its answer.
    Registering,
    /// Registered (possibly re-registering).
    Registered,
    /// Deregistering.
    Deregistering,
    /// Deregistered; the PE is finished.
    Deregistered,
    /// Stopped after an error ([`PeEvent::Rejected`] or [`PeEvent::Failed`]).
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Active,
    Leaving,
    Done,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A registration carrying this policy.
    Register(Policy),
    Deregister,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Request {
    kind: Kind,
    deadline: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Conn {
    id: ConnId,
    registrar: Registrar,
    local: Option<IpAddr>,
}

/// The sans-I/O pool element.
#[derive(Debug)]
pub struct PoolElement {
    config: Config,
    id: PeId,
    hunt: Hunt,
    conn: Option<Conn>,
    last_registrar: Option<Registrar>,
    phase: Phase,
    /// The registrar on `conn` accepted the PE.
    registered: bool,
    /// Some registrar may hold the registration (accepted and not deregistered since).
    holds: bool,
    request: Option<Request>,
    /// Failed attempts of the current procedure (T2/T3 expiries, lost connections).
    attempts: u32,
    /// T4.
    reregister_at: Option<Millis>,
    home_pr: Option<PrId>,
    policy: Policy,
    accepted: Option<Policy>,
    out: VecDeque<Action<PeEvent>>,
}

impl PoolElement {
    /// A PE for `config`; `seed` draws its PE ID when the configuration has none (RFC 5352
    /// §3.1 R2: random, non-zero; 32 bits for the RFC generation, 64 for NG).
    pub fn new(config: Config, seed: u64) -> Result<Self, Error> {
        let bits = match config.generation {
            Generation::Rfc => 32,
            Generation::Ng => 64,
        };
        let id = match config.pe_id {
            Some(PeId(0)) => return Err(Error::Config("the PE ID must not be 0".into())),
            Some(PeId(id)) if bits == 32 && id > u64::from(u32::MAX) => {
                return Err(Error::Config(format!(
                    "PE ID {id:#x} does not fit the RFC generation's 32 bits"
                )));
            }
            Some(id) => id,
            None => PeId(Rng::seed(seed).nonzero(bits)),
        };
        if config.pool_handle.is_empty() {
            return Err(Error::Config("the pool handle is empty".into()));
        }
        if config.transport.kind != TransportKind::Sctp && config.transport.addresses.len() > 1 {
            return Err(Error::Config(
                "only an SCTP user transport carries more than one address".into(),
            ));
        }
        if config.registration_life == 0 || config.registration_life > MAX_LIFE {
            return Err(Error::Config(format!(
                "the registration life must be 1..={MAX_LIFE} ms"
            )));
        }
        Ok(Self {
            hunt: Hunt::new(ServerList::configured(&config.registrars), config.timers),
            id,
            conn: None,
            last_registrar: None,
            phase: Phase::Idle,
            registered: false,
            holds: false,
            request: None,
            attempts: 0,
            reregister_at: None,
            home_pr: None,
            policy: config.policy,
            accepted: None,
            out: VecDeque::new(),
            config,
        })
    }

    /// The PE identifier.
    pub fn id(&self) -> PeId {
        self.id
    }

    /// Where the PE stands.
    pub fn state(&self) -> PeState {
        match self.phase {
            Phase::Idle => PeState::Idle,
            Phase::Active if self.registered => PeState::Registered,
            Phase::Active => PeState::Registering,
            Phase::Leaving => PeState::Deregistering,
            Phase::Done => PeState::Deregistered,
            Phase::Failed => PeState::Failed,
        }
    }

    /// The registrar holding the registration now.
    pub fn registrar(&self) -> Option<Registrar> {
        self.conn.filter(|_| self.registered).map(|c| c.registrar)
    }

    /// The home PR's identifier, once a keep-alive told it.
    pub fn home_pr(&self) -> Option<PrId> {
        self.home_pr
    }

    /// The policy values the PE advertises (or is about to).
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// T4 in milliseconds.
    pub fn reregistration_interval(&self) -> Millis {
        self.config
            .reregistration_interval
            .unwrap_or_else(|| rfc_reregistration_interval(self.config.registration_life))
            .max(1)
    }

    /// The registrars known (configured and learnt).
    pub fn servers(&self) -> &ServerList {
        self.hunt.list()
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action<PeEvent>> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let t4 = self
            .reregister_at
            .filter(|_| self.phase == Phase::Active && self.registered && self.request.is_none());
        [
            self.hunt.poll_timeout(),
            self.request.map(|r| r.deadline),
            t4,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Starts the PE: server hunt, then registration (RFC 5352 §3.1).
    pub fn start(&mut self, now: Millis) {
        if self.phase == Phase::Idle {
            self.phase = Phase::Active;
            self.drive(now);
        }
    }

    /// Changes the advertised policy values (e.g. the load of an adaptive policy); a registered
    /// PE re-registers at once (RFC 5352 §3.1, §6.5.2; checklist EP-11).
    pub fn set_policy(&mut self, policy: Policy, now: Millis) {
        self.policy = policy;
        self.drive(now);
    }

    /// Deregisters (RFC 5352 §3.2): D1-D4 on the registration's association, T3, server hunt
    /// and retry on failure. A PE that was never registered just stops.
    pub fn deregister(&mut self, now: Millis) {
        match self.phase {
            Phase::Idle => self.finish(Phase::Done, PeEvent::Deregistered),
            Phase::Active => {
                self.phase = Phase::Leaving;
                if self.request.is_none() {
                    self.attempts = 0;
                }
                self.drive(now);
            }
            Phase::Leaving | Phase::Done | Phase::Failed => {}
        }
    }

    /// A connection the PE asked for is up; `local` is its local address.
    pub fn on_connected(&mut self, conn: ConnId, local: Option<SocketAddr>, now: Millis) {
        match self.hunt.on_connected(conn, &mut self.out) {
            HuntOutcome::Found(registrar) => {
                if let Some(old) = self.conn.take() {
                    self.out.push_back(Action::Close { conn: old.id });
                }
                self.conn = Some(Conn {
                    id: conn,
                    registrar,
                    local: local.map(|a| a.ip()),
                });
                self.last_registrar = Some(registrar);
                self.registered = false;
                self.home_pr = None;
                self.drive(now);
            }
            _ if self.conn.is_some_and(|c| c.id == conn) => {}
            _ => self.out.push_back(Action::Close { conn }),
        }
    }

    /// A connection attempt failed (`error`: the OS error as text).
    pub fn on_connect_failed(&mut self, conn: ConnId, error: String) {
        if let Some((failure, outcome)) = self.hunt.on_connect_failed(conn, error, &mut self.out) {
            self.emit(PeEvent::ConnectFailed(failure));
            self.on_hunt(outcome);
        }
    }

    /// A connection closed or failed (the association died, or a send failed).
    pub fn on_closed(&mut self, conn: ConnId, now: Millis) {
        let Some(c) = self.conn.filter(|c| c.id == conn) else {
            return;
        };
        self.conn = None;
        self.home_pr = None;
        let was_registered = std::mem::take(&mut self.registered);
        if self.request.take().is_some() && self.count_failed_attempt() {
            return;
        }
        if self.phase == Phase::Active && was_registered {
            self.emit(PeEvent::RegistrationLost {
                registrar: c.registrar,
                reason: LossReason::ConnectionClosed,
            });
        }
        self.drive(now);
    }

    /// An ASAP_SERVER_ANNOUNCE datagram from `from` (RFC 5352 §3.6).
    pub fn on_announce(&mut self, from: SocketAddr, datagram: &[u8], now: Millis) {
        let settings = AnnounceSettings {
            generation: self.config.generation,
            transport: self.config.announce_transport,
            default_port: self.config.announce_default_port,
        };
        let outcome = self
            .hunt
            .on_announce(from, datagram, now, &settings, &mut self.out);
        self.on_hunt(outcome);
    }

    /// Timers: T2, T3, T4, T5, T7.
    pub fn handle_timeout(&mut self, now: Millis) {
        let outcome = self.hunt.on_timeout(now, &mut self.out);
        self.on_hunt(outcome);
        if self.request.is_some_and(|r| r.deadline <= now) {
            // T2/T3 expiry: server hunt, then the procedure again (RFC 5352 §3.1, §3.2).
            self.request = None;
            if let Some(c) = self.conn.take() {
                self.out.push_back(Action::Close { conn: c.id });
                self.registered = false;
                self.home_pr = None;
            }
            if self.count_failed_attempt() {
                return;
            }
        }
        self.drive(now);
    }

    /// One complete ASAP message received on `conn`.
    pub fn on_message(&mut self, conn: ConnId, message: &[u8], now: Millis) {
        let Some(c) = self.conn.filter(|c| c.id == conn) else {
            return;
        };
        let Ok(decoded) = AsapMessage::decode(message, self.config.generation) else {
            return;
        };
        let ours = |h: PoolHandle<'_>, id: PeId| h.0 == self.config.pool_handle && id == self.id;
        match decoded.message {
            AsapMessage::RegistrationResponse {
                rejected,
                pool_handle,
                pe_id,
                error,
            } if ours(pool_handle, pe_id) => {
                let refusal = rejected.then(|| first_cause(error));
                self.on_registration_answer(c, refusal, now);
            }
            AsapMessage::DeregistrationResponse {
                pool_handle,
                pe_id,
                error,
            } if ours(pool_handle, pe_id) => {
                self.on_deregistration_answer(c, error.map(|e| first_cause(Some(e))), now)
            }
            AsapMessage::EndpointKeepAlive {
                home,
                server_id,
                pool_handle,
                pe_id,
            } => self.on_keep_alive(c, home, server_id, pool_handle, pe_id),
            AsapMessage::Error(causes) => match self.request.map(|r| r.kind) {
                Some(Kind::Register(_)) => {
                    self.on_registration_answer(c, Some(first_cause(Some(causes))), now)
                }
                Some(Kind::Deregister) => {
                    self.on_deregistration_answer(c, Some(first_cause(Some(causes))), now)
                }
                None => {}
            },
            _ => {}
        }
    }

    /// RFC 5352 §3.1: the answer to a registration (`refusal`: R=1 and its cause).
    fn on_registration_answer(&mut self, c: Conn, refusal: Option<Cause>, now: Millis) {
        let Some(Request {
            kind: Kind::Register(sent),
            ..
        }) = self.request
        else {
            return;
        };
        self.request = None;
        match refusal {
            None => {
                self.attempts = 0;
                self.registered = true;
                let reregistration = self.accepted.is_some();
                self.holds = true;
                self.accepted = Some(sent);
                self.reregister_at = Some(now + self.reregistration_interval());
                self.emit(PeEvent::Registered {
                    registrar: c.registrar,
                    reregistration,
                });
            }
            Some(cause) => {
                let error = Error::Rejected { cause };
                match self.accepted {
                    // New values refused: keep the registration with the accepted ones.
                    Some(old) if self.registered && old != sent => {
                        if self.policy == sent {
                            self.policy = old;
                        }
                        self.reregister_at = Some(now + self.reregistration_interval());
                        self.emit(PeEvent::Rejected { error, kept: true });
                    }
                    // Never retried unchanged: the PE stops (checklist EP-04).
                    _ => {
                        self.fail(PeEvent::Rejected { error, kept: false });
                        return;
                    }
                }
            }
        }
        self.drive(now);
    }

    /// RFC 5352 §3.2: the answer to a deregistration, or an unsolicited one after the
    /// registration life ran out at the registrar.
    fn on_deregistration_answer(&mut self, c: Conn, refusal: Option<Cause>, now: Millis) {
        match self.request.map(|r| r.kind) {
            Some(Kind::Deregister) => {
                self.request = None;
                self.holds = false;
                let event = match refusal {
                    None => PeEvent::Deregistered,
                    Some(cause) => PeEvent::Failed(Error::Operation {
                        request: "deregistration",
                        cause,
                    }),
                };
                self.finish(Phase::Done, event);
            }
            None if self.phase == Phase::Active && self.registered => {
                self.registered = false;
                self.emit(PeEvent::RegistrationLost {
                    registrar: c.registrar,
                    reason: LossReason::Expired,
                });
                self.drive(now);
            }
            _ => {}
        }
    }

    /// RFC 5352 §3.4: KA1 drop a keep-alive for another handle (or, RSPLIB's extension, another
    /// PE); KA2 ack it on its association with the PE's ID, and with H=1 from another server
    /// adopt the sender as home PR.
    fn on_keep_alive(
        &mut self,
        c: Conn,
        home: bool,
        server_id: PrId,
        pool_handle: PoolHandle<'_>,
        pe_id: Option<PeId>,
    ) {
        if pool_handle.0 != self.config.pool_handle || pe_id.is_some_and(|id| id != self.id) {
            return;
        }
        let ack = AsapMessage::EndpointKeepAliveAck {
            pool_handle,
            pe_id: self.id,
        };
        self.send(c.id, &ack);
        if home && self.home_pr != Some(server_id) {
            self.home_pr = Some(server_id);
            self.emit(PeEvent::HomeChanged { server_id });
        } else if self.home_pr.is_none() {
            self.home_pr = Some(server_id);
        }
    }

    /// Starts whatever the phase needs next: a registration, a deregistration, a server hunt.
    fn drive(&mut self, now: Millis) {
        if self.request.is_some() {
            return;
        }
        let wanted = match self.phase {
            Phase::Idle | Phase::Done | Phase::Failed => return,
            Phase::Active => {
                let due = !self.registered
                    || self.accepted != Some(self.policy)
                    || self.reregister_at.is_some_and(|t| t <= now);
                if !due {
                    return;
                }
                Kind::Register(self.policy)
            }
            Phase::Leaving => {
                if !self.holds {
                    self.finish(Phase::Done, PeEvent::Deregistered);
                    return;
                }
                Kind::Deregister
            }
        };
        let Some(c) = self.conn else {
            let outcome = self.hunt.start(now, self.last_registrar, &mut self.out);
            self.on_hunt(outcome);
            return;
        };
        let (message, timeout) = match wanted {
            Kind::Register(policy) => match self.registration(c, policy) {
                Ok(m) => (m, self.config.timers.t2_registration),
                Err(e) => {
                    self.fail(PeEvent::Failed(e));
                    return;
                }
            },
            Kind::Deregister => {
                let m = AsapMessage::Deregistration {
                    pool_handle: PoolHandle(&self.config.pool_handle),
                    pe_id: self.id,
                };
                match crate::encode(&m, self.config.generation) {
                    Ok(m) => (m, self.config.timers.t3_deregistration),
                    Err(e) => {
                        self.fail(PeEvent::Failed(Error::Config(e.to_string())));
                        return;
                    }
                }
            }
        };
        self.out.push_back(Action::Send {
            conn: c.id,
            message,
        });
        self.request = Some(Request {
            kind: wanted,
            deadline: now + timeout.max(1),
        });
    }

    /// RFC 5352 §3.1 R2: handle; PE with its ID, home PR 0, life, one user transport, policy;
    /// no ASAP transport.
    fn registration(&self, c: Conn, policy: Policy) -> Result<Vec<u8>, Error> {
        let spec = &self.config.transport;
        let addresses: Vec<IpAddr> = if spec.addresses.is_empty() {
            c.local.into_iter().collect()
        } else {
            spec.addresses.clone()
        };
        if addresses.is_empty() {
            return Err(Error::Config(
                "no user transport address configured and the connection's local address is \
                 unknown"
                    .into(),
            ));
        }
        let message = AsapMessage::Registration {
            pool_handle: PoolHandle(&self.config.pool_handle),
            pool_element: WirePe {
                id: self.id,
                home_pr: PrId(0),
                registration_life: self.config.registration_life.min(MAX_LIFE) as i32,
                user_transport: UserTransport::Transport(TransportParam {
                    kind: spec.kind,
                    port: spec.port,
                    transport_use: spec.transport_use,
                    service_code: 0,
                    addresses: Seq::from_items(&addresses),
                }),
                policy,
                asap_transport: None,
            },
        };
        crate::encode(&message, self.config.generation).map_err(|e| Error::Config(e.to_string()))
    }

    /// A hunt outcome that matters here: a failed round.
    fn on_hunt(&mut self, outcome: HuntOutcome) {
        if let HuntOutcome::RoundFailed(failures) = outcome {
            if self.phase == Phase::Leaving {
                // Nobody to deregister at: the registrations expire by their life.
                self.finish(Phase::Done, PeEvent::Failed(Error::Unreachable(failures)));
            } else {
                self.emit(PeEvent::ServerHuntFailed(failures));
            }
        }
    }

    /// Counts a failed attempt of the current procedure; beyond MAX-REG-ATTEMPT the PE reports
    /// it and stops (RFC 5352 §3.1). Returns whether it stopped.
    fn count_failed_attempt(&mut self) -> bool {
        self.attempts += 1;
        if self.attempts < self.config.timers.max_reg_attempt.max(1) {
            return false;
        }
        let error = Error::Timeout {
            request: if self.phase == Phase::Leaving {
                "deregistration"
            } else {
                "registration"
            },
            attempts: self.attempts,
        };
        if self.phase == Phase::Leaving {
            self.finish(Phase::Done, PeEvent::Failed(error));
        } else {
            self.fail(PeEvent::Failed(error));
        }
        true
    }

    fn fail(&mut self, event: PeEvent) {
        self.finish(Phase::Failed, event);
    }

    /// Ends the PE's life: closes its connection, stops the hunt, reports `event`.
    fn finish(&mut self, phase: Phase, event: PeEvent) {
        self.phase = phase;
        self.request = None;
        self.registered = false;
        self.hunt.stop(&mut self.out);
        if let Some(c) = self.conn.take() {
            self.out.push_back(Action::Close { conn: c.id });
        }
        self.emit(event);
    }

    fn send(&mut self, conn: ConnId, message: &AsapMessage<'_>) {
        if let Ok(message) = crate::encode(message, self.config.generation) {
            self.out.push_back(Action::Send { conn, message });
        }
    }

    fn emit(&mut self, event: PeEvent) {
        self.out.push_back(Action::Event(event));
    }
}

/// The first cause of an Operation Error, or "unspecified" when there is none.
fn first_cause(error: Option<OperationError<'_>>) -> Cause {
    Cause(error.and_then(|e| e.first()).map_or(0, |c| c.code))
}

#[cfg(test)]
mod tests;
