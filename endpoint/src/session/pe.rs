//! The PE side of a session: one per PU connection. It sends the business card when the
//! session starts (RFC 5352 §3.9), the application's cookies (§3.8) and data, and hands the
//! application the PU's cookie echo and data.

use std::collections::VecDeque;

use rserpool_protocol::{Generation, Policy};

use super::framing::RecordDecoder;
use super::{
    Control, DEFAULT_MAX_DATA_LEN, MAX_CONTROL_LEN, MAX_COOKIE_LEN, PPID_CONTROL, SessionError,
    Transmit, check_data_len, decode_control, encode_business_card, encode_cookie,
};
use crate::PeInfo;

/// How a PE runs its sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeSessionConfig {
    /// The PE's pool, named in its business card.
    pub pool_handle: Vec<u8>,
    /// The wire generation of the control messages (PE IDs of 32 or 64 bits in the card).
    pub generation: Generation,
    /// A policy to put in the business card, as RSPLIB does (not in RFC 5352 §2.2.13).
    pub card_policy: Option<Policy>,
    /// The longest cookie sent or accepted in an echo (at most [`MAX_COOKIE_LEN`]).
    pub max_cookie_len: usize,
    /// The longest application message accepted or sent.
    pub max_data_len: usize,
}

impl PeSessionConfig {
    /// Sessions of a PE of `pool_handle`, RFC generation, cookies up to [`MAX_COOKIE_LEN`], data
    /// up to [`DEFAULT_MAX_DATA_LEN`].
    pub fn new(pool_handle: impl Into<Vec<u8>>) -> Self {
        Self {
            pool_handle: pool_handle.into(),
            generation: Generation::Rfc,
            card_policy: None,
            max_cookie_len: MAX_COOKIE_LEN,
            max_data_len: DEFAULT_MAX_DATA_LEN,
        }
    }
}

/// What a PE's session tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeSessionEvent {
    /// The PU failed over to this PE and echoed the cookie of the previous PE (RFC 5352 §3.8):
    /// restore the session state from it (and check its signature, the PU treats it as opaque).
    CookieEcho(Vec<u8>),
    /// Application data.
    Data {
        /// Its PPID.
        ppid: u32,
        /// The message.
        payload: Vec<u8>,
    },
    /// The peer is a PU/PE combination and named its failover alternatives (RFC 5352 §3.9).
    BusinessCard {
        /// The PEs in the peer's preferred order.
        pool_elements: Vec<PeInfo>,
    },
    /// A received record was dropped; the session goes on.
    Dropped(SessionError),
}

/// The sans-I/O PE side of one session.
#[derive(Debug)]
pub struct PeSession {
    config: PeSessionConfig,
    decoder: RecordDecoder,
    /// Whether anything arrived yet: a cookie echo must come first (RFC 5352 §3.8).
    received_any: bool,
    out: VecDeque<Transmit>,
    events: VecDeque<PeSessionEvent>,
}

impl PeSession {
    /// A session that starts now, as the PU's connection came up. `business_card` names the
    /// PE's preferred failover alternatives; when it is not empty the card is the session's
    /// first message (RFC 5352 §3.9: sent when communication starts).
    pub fn new(config: PeSessionConfig, business_card: &[PeInfo]) -> Result<Self, SessionError> {
        let max_cookie_len = config.max_cookie_len.min(MAX_COOKIE_LEN);
        let config = PeSessionConfig {
            max_cookie_len,
            ..config
        };
        let mut session = Self {
            decoder: RecordDecoder::new(MAX_CONTROL_LEN, config.max_data_len),
            config,
            received_any: false,
            out: VecDeque::new(),
            events: VecDeque::new(),
        };
        if !business_card.is_empty() {
            session.send_business_card(business_card)?;
        }
        Ok(session)
    }

    /// RFC 5352 §3.9: (re-)sends the business card, e.g. to change the failover order.
    pub fn send_business_card(&mut self, pool_elements: &[PeInfo]) -> Result<(), SessionError> {
        let t = encode_business_card(
            &self.config.pool_handle,
            self.config.card_policy,
            pool_elements,
            self.config.generation,
        )?;
        self.out.push_back(t);
        Ok(())
    }

    /// RFC 5352 §3.8: sends the session state as ASAP_COOKIE; the PU keeps only the latest.
    pub fn send_cookie(&mut self, cookie: &[u8]) -> Result<(), SessionError> {
        let t = encode_cookie(
            false,
            cookie,
            self.config.generation,
            self.config.max_cookie_len,
        )?;
        self.out.push_back(t);
        Ok(())
    }

    /// Sends application data with `ppid` (any but [`PPID_CONTROL`]).
    pub fn send_data(&mut self, ppid: u32, payload: &[u8]) -> Result<(), SessionError> {
        if ppid == PPID_CONTROL {
            return Err(SessionError::ReservedPpid);
        }
        check_data_len(payload.len(), self.config.max_data_len)?;
        self.out.push_back(Transmit {
            ppid,
            payload: payload.to_vec(),
        });
        Ok(())
    }

    /// One whole message received (an SCTP user message with its PPID). An error means the
    /// message was dropped; the session goes on.
    pub fn on_record(&mut self, ppid: u32, payload: &[u8]) -> Result<(), SessionError> {
        let first = !self.received_any;
        self.received_any = true;
        if ppid != PPID_CONTROL {
            check_data_len(payload.len(), self.config.max_data_len)?;
            self.events.push_back(PeSessionEvent::Data {
                ppid,
                payload: payload.to_vec(),
            });
            return Ok(());
        }
        match decode_control(
            payload,
            self.config.generation,
            self.config.max_cookie_len,
            "PE",
        )? {
            // RFC 5352 §3.8: the echo is the first message a PU sends to the PE it failed
            // over to.
            Control::CookieEcho(cookie) if first => {
                self.events.push_back(PeSessionEvent::CookieEcho(cookie));
                Ok(())
            }
            Control::CookieEcho(_) => Err(SessionError::LateCookieEcho),
            // RFC 5352 §3.9: a PU sends a card only if it is also a PE.
            Control::BusinessCard {
                pool_elements,
                pool_handle: _,
            } => {
                self.events
                    .push_back(PeSessionEvent::BusinessCard { pool_elements });
                Ok(())
            }
            // RFC 5352 §3.8: cookies go from the PE to the PU only.
            Control::Cookie(_) => Err(SessionError::UnexpectedControl {
                message_type: rserpool_protocol::asap::message_type::COOKIE,
                receiver: "PE",
            }),
        }
    }

    /// Bytes from a byte stream in the [`super::framing`]: every complete record is handled as
    /// [`Self::on_record`] does, a dropped one becomes [`PeSessionEvent::Dropped`]. An error
    /// means the stream cannot be framed any more: close the connection.
    pub fn on_stream_bytes(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.decoder.push(bytes);
        while let Some((ppid, payload)) = self.decoder.next_record()? {
            if let Err(e) = self.on_record(ppid, &payload) {
                self.events.push_back(PeSessionEvent::Dropped(e));
            }
        }
        Ok(())
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Whether events wait for [`Self::poll_event`] (the driver counts a whole record received
    /// as activity by the events it gives).
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<PeSessionEvent> {
        self.events.pop_front()
    }
}
