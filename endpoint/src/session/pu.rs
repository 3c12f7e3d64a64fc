//! The PU side of a session with a pool: keeps the latest cookie (RFC 5352 §3.8) and the order of
//! the latest business card (§3.9), and when the PE fails picks the next one (the card's first
//! PE that has not failed, else the pool policy's choice the caller passes in) and sends the
//! cookie in ASAP_COOKIE_ECHO as the first message to it, then the application's data.

use std::collections::VecDeque;

use rserpool_protocol::{Generation, PeId, TransportKind};

use super::framing::RecordDecoder;
use super::{
    Control, DEFAULT_MAX_DATA_LEN, MAX_CONTROL_LEN, MAX_COOKIE_LEN, PPID_CONTROL, SessionError,
    Transmit, check_data_len, decode_control, encode_cookie,
};
use crate::{ConnId, PeInfo, PeTransport};

/// PEs remembered as failed in one session, at most (the oldest is forgotten first).
const MAX_FAILED: usize = 1024;

/// How a PU runs a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PuSessionConfig {
    /// The pool.
    pub pool_handle: Vec<u8>,
    /// The wire generation of the control messages.
    pub generation: Generation,
    /// The transport the session reaches PEs over: business-card entries of another transport
    /// are skipped. [`crate::driver::Session::open`] sets it from its options' transport.
    pub transport: TransportKind,
    /// The longest cookie kept (at most [`MAX_COOKIE_LEN`]); a longer one is dropped.
    pub max_cookie_len: usize,
    /// The longest application message accepted or sent.
    pub max_data_len: usize,
    /// Failovers in a row to PEs that never sent anything before giving up.
    pub max_failovers: u32,
    /// Application bytes that may wait for a connection to come up.
    pub max_queued_bytes: usize,
}

impl PuSessionConfig {
    /// A session with `pool_handle` over TCP, RFC generation, cookies up to
    /// [`MAX_COOKIE_LEN`], data up to [`DEFAULT_MAX_DATA_LEN`], 4 failovers in a row, 1 MiB
    /// queued.
    pub fn new(pool_handle: impl Into<Vec<u8>>) -> Self {
        Self {
            pool_handle: pool_handle.into(),
            generation: Generation::Rfc,
            transport: TransportKind::Tcp,
            max_cookie_len: MAX_COOKIE_LEN,
            max_data_len: DEFAULT_MAX_DATA_LEN,
            max_failovers: 4,
            max_queued_bytes: 1 << 20,
        }
    }
}

/// What a PU session asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionAction {
    /// Connect to `pe` (its user transport), then report [`PuSession::on_connected`] or
    /// [`PuSession::on_connect_failed`] with `conn`.
    Connect {
        /// The name of the connection.
        conn: ConnId,
        /// The PE.
        pe: PeInfo,
    },
    /// Send one message on a connection.
    Transmit {
        /// The connection.
        conn: ConnId,
        /// The message.
        transmit: Transmit,
    },
    /// Close a connection.
    Close {
        /// The connection.
        conn: ConnId,
    },
}

/// What a PU session tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PuSessionEvent {
    /// The connection to a PE is up; `failover`: it replaces a PE that failed (the cookie
    /// echo, if there was a cookie, went first).
    Connected {
        /// The PE.
        pe: PeInfo,
        /// Whether this is a failover.
        failover: bool,
    },
    /// Application data from the PE.
    Data {
        /// Its PPID.
        ppid: u32,
        /// The message.
        payload: Vec<u8>,
    },
    /// The PE named its preferred failover alternatives (RFC 5352 §3.9).
    BusinessCard {
        /// The PEs in order.
        pool_elements: Vec<PeInfo>,
    },
    /// The PE failed (connection refused, closed or broken): call [`PuSession::fail_over`]
    /// with the pool policy's next PE (e.g. [`crate::pu::PoolUser::pe_failed`], which also
    /// reports it to the registrar).
    PeFailed {
        /// The PE.
        pe: PeInfo,
        /// What happened.
        error: String,
    },
    /// A received record was dropped; the session goes on.
    Dropped(SessionError),
}

#[derive(Debug)]
struct Current {
    conn: ConnId,
    pe: PeInfo,
    connected: bool,
    decoder: RecordDecoder,
}

/// The sans-I/O PU side of a session.
#[derive(Debug)]
pub struct PuSession {
    config: PuSessionConfig,
    next_conn: u64,
    current: Option<Current>,
    cookie: Option<Vec<u8>>,
    card: Vec<PeInfo>,
    failed: VecDeque<PeId>,
    /// Failovers since a PE last sent something.
    failovers: u32,
    last_error: String,
    /// Connections made; more than one means failovers.
    connections: u64,
    queued: VecDeque<Transmit>,
    queued_bytes: usize,
    actions: VecDeque<SessionAction>,
    events: VecDeque<PuSessionEvent>,
}

impl PuSession {
    /// A session not yet connected; [`Self::start`] names its first PE.
    pub fn new(config: PuSessionConfig) -> Self {
        let max_cookie_len = config.max_cookie_len.min(MAX_COOKIE_LEN);
        Self {
            config: PuSessionConfig {
                max_cookie_len,
                ..config
            },
            next_conn: 0,
            current: None,
            cookie: None,
            card: Vec::new(),
            failed: VecDeque::new(),
            failovers: 0,
            last_error: String::new(),
            connections: 0,
            queued: VecDeque::new(),
            queued_bytes: 0,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Starts the session with `pe` (the pool policy's choice); a connection in use is closed.
    pub fn start(&mut self, pe: PeInfo) -> ConnId {
        if let Some(old) = self.current.take() {
            self.actions
                .push_back(SessionAction::Close { conn: old.conn });
        }
        self.connect(pe)
    }

    fn connect(&mut self, pe: PeInfo) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.current = Some(Current {
            conn,
            pe: pe.clone(),
            connected: false,
            decoder: RecordDecoder::new(MAX_CONTROL_LEN, self.config.max_data_len),
        });
        self.actions.push_back(SessionAction::Connect { conn, pe });
        conn
    }

    /// The session's configuration.
    pub fn config(&self) -> &PuSessionConfig {
        &self.config
    }

    /// The PE in use or being connected to.
    pub fn current(&self) -> Option<&PeInfo> {
        self.current.as_ref().map(|c| &c.pe)
    }

    /// Whether the connection to the current PE is up.
    pub fn is_connected(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.connected)
    }

    /// The latest cookie (RFC 5352 §3.8: only the latest is kept).
    pub fn cookie(&self) -> Option<&[u8]> {
        self.cookie.as_deref()
    }

    /// The latest business card's PEs, in the preferred failover order (RFC 5352 §3.9).
    pub fn business_card(&self) -> &[PeInfo] {
        &self.card
    }

    /// Whether `pe` failed in this session (it is not chosen again).
    pub fn has_failed(&self, pe: PeId) -> bool {
        self.failed.contains(&pe)
    }

    /// The connection to the current PE is up: RFC 5352 §3.8, after a failover the latest
    /// cookie goes first in ASAP_COOKIE_ECHO (checklist PU-07), then the queued data.
    pub fn on_connected(&mut self, conn: ConnId) {
        let Some(current) = self.current.as_mut().filter(|c| c.conn == conn) else {
            return;
        };
        current.connected = true;
        let pe = current.pe.clone();
        self.connections += 1;
        let failover = self.connections > 1;
        if failover && let Some(cookie) = &self.cookie {
            // The cookie was checked against the limit when it arrived.
            match encode_cookie(
                true,
                cookie,
                self.config.generation,
                self.config.max_cookie_len,
            ) {
                Ok(transmit) => self
                    .actions
                    .push_back(SessionAction::Transmit { conn, transmit }),
                Err(e) => self.events.push_back(PuSessionEvent::Dropped(e)),
            }
        }
        while let Some(transmit) = self.queued.pop_front() {
            self.actions
                .push_back(SessionAction::Transmit { conn, transmit });
        }
        self.queued_bytes = 0;
        self.events
            .push_back(PuSessionEvent::Connected { pe, failover });
    }

    /// The connection attempt failed (`error`: the OS error as text).
    pub fn on_connect_failed(&mut self, conn: ConnId, error: String) {
        self.fail(conn, error);
    }

    /// The connection closed or broke (`error`: what happened).
    pub fn on_closed(&mut self, conn: ConnId, error: String) {
        self.fail(conn, error);
    }

    fn fail(&mut self, conn: ConnId, error: String) {
        let Some(current) = self.current.take_if(|c| c.conn == conn) else {
            return;
        };
        if self.failed.len() >= MAX_FAILED {
            self.failed.pop_front();
        }
        self.failed.push_back(current.pe.id);
        self.last_error = error.clone();
        self.actions.push_back(SessionAction::Close { conn });
        self.events.push_back(PuSessionEvent::PeFailed {
            pe: current.pe,
            error,
        });
    }

    /// After [`PuSessionEvent::PeFailed`]: connects to the next PE, the business card's first
    /// that has not failed and can be reached over the session's transport (RFC 5352 §3.9),
    /// else `policy_choice`, the PE the pool policy picked (RFC 5352 §3.8 "the PU selects
    /// another PE"). Fails when no PE is left or after `max_failovers` failovers in a row to PEs
    /// that sent nothing.
    pub fn fail_over(&mut self, policy_choice: Option<PeInfo>) -> Result<ConnId, SessionError> {
        if self.current.is_some() {
            return Err(SessionError::Io {
                what: "fail over".into(),
                error: "the session's PE has not failed".into(),
            });
        }
        if self.failovers >= self.config.max_failovers {
            return Err(SessionError::TooManyFailovers {
                attempts: self.failovers,
                last_error: self.last_error.clone(),
            });
        }
        let usable = |pe: &&PeInfo| {
            !self.failed.contains(&pe.id)
                && matches!(pe.transport, PeTransport::Transport { kind, .. } if kind == self.config.transport)
                && !pe.addresses().is_empty()
        };
        let next = self
            .card
            .iter()
            .find(usable)
            .or(policy_choice.as_ref().filter(usable))
            .cloned();
        let Some(pe) = next else {
            return Err(SessionError::NoPoolElement {
                pool_handle: self.config.pool_handle.escape_ascii().to_string(),
                failed: self.failed.len(),
            });
        };
        self.failovers += 1;
        Ok(self.connect(pe))
    }

    /// Sends application data with `ppid` (any but [`PPID_CONTROL`]); while the connection is
    /// not up it waits (bounded by `max_queued_bytes`).
    pub fn send_data(&mut self, ppid: u32, payload: &[u8]) -> Result<(), SessionError> {
        if ppid == PPID_CONTROL {
            return Err(SessionError::ReservedPpid);
        }
        check_data_len(payload.len(), self.config.max_data_len)?;
        let transmit = Transmit {
            ppid,
            payload: payload.to_vec(),
        };
        match &self.current {
            Some(c) if c.connected => {
                let conn = c.conn;
                self.actions
                    .push_back(SessionAction::Transmit { conn, transmit });
            }
            _ => {
                let queued = self.queued_bytes + payload.len();
                if queued > self.config.max_queued_bytes {
                    return Err(SessionError::QueueFull {
                        queued,
                        max: self.config.max_queued_bytes,
                    });
                }
                self.queued_bytes = queued;
                self.queued.push_back(transmit);
            }
        }
        Ok(())
    }

    /// One whole message received on `conn` (an SCTP user message with its PPID). An error
    /// means it was dropped; the session goes on. Messages of a connection no longer in use are
    /// ignored.
    pub fn on_record(
        &mut self,
        conn: ConnId,
        ppid: u32,
        payload: &[u8],
    ) -> Result<(), SessionError> {
        if self.current.as_ref().is_none_or(|c| c.conn != conn) {
            return Ok(());
        }
        // The PE answers: the failovers in a row end.
        self.failovers = 0;
        if ppid != PPID_CONTROL {
            check_data_len(payload.len(), self.config.max_data_len)?;
            self.events.push_back(PuSessionEvent::Data {
                ppid,
                payload: payload.to_vec(),
            });
            return Ok(());
        }
        match decode_control(
            payload,
            self.config.generation,
            self.config.max_cookie_len,
            "PU",
        )? {
            // RFC 5352 §3.8: the PU keeps only the latest cookie.
            Control::Cookie(cookie) => self.cookie = Some(cookie),
            // RFC 5352 §3.9: remember the listed PEs as the preferred failover order.
            Control::BusinessCard {
                pool_handle,
                pool_elements,
            } => {
                if pool_handle != self.config.pool_handle {
                    return Err(SessionError::ForeignBusinessCard {
                        pool_handle: pool_handle.escape_ascii().to_string(),
                        expected: self.config.pool_handle.escape_ascii().to_string(),
                    });
                }
                self.card.clone_from(&pool_elements);
                self.events
                    .push_back(PuSessionEvent::BusinessCard { pool_elements });
            }
            // A PU that is not also a PE is never echoed a cookie.
            Control::CookieEcho(_) => {
                return Err(SessionError::UnexpectedControl {
                    message_type: rserpool_protocol::asap::message_type::COOKIE_ECHO,
                    receiver: "PU",
                });
            }
        }
        Ok(())
    }

    /// Bytes of `conn`'s byte stream in the [`super::framing`]: each complete record as
    /// [`Self::on_record`], a dropped one becomes [`PuSessionEvent::Dropped`]. A stream that
    /// cannot be framed fails the PE ([`PuSessionEvent::PeFailed`]) and returns the error.
    pub fn on_stream_bytes(&mut self, conn: ConnId, bytes: &[u8]) -> Result<(), SessionError> {
        let Some(current) = self.current.as_mut().filter(|c| c.conn == conn) else {
            return Ok(());
        };
        current.decoder.push(bytes);
        loop {
            let Some(current) = self.current.as_mut().filter(|c| c.conn == conn) else {
                return Ok(());
            };
            match current.decoder.next_record() {
                Ok(Some((ppid, payload))) => {
                    if let Err(e) = self.on_record(conn, ppid, &payload) {
                        self.events.push_back(PuSessionEvent::Dropped(e));
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.fail(conn, e.to_string());
                    return Err(e.into());
                }
            }
        }
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<SessionAction> {
        self.actions.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<PuSessionEvent> {
        self.events.pop_front()
    }
}
