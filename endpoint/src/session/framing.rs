//! The session layer's record framing on byte streams (TCP, MPTCP, TLS), this project's choice:
//! RFC 5352 §3.8-3.9 assume SCTP, where every user message carries a PPID and the control channel
//! is PPID 11 on the data association. A byte stream has no PPID, so each message travels as a
//! record:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 PPID (network byte order)                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |        payload length in bytes (network byte order)           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            payload (no padding) ...                           |
//! ```
//!
//! PPID 11 ([`super::PPID_CONTROL`]) carries one ASAP message of the control channel; any other
//! PPID is application data with that PPID. The decoder is incremental (a record may arrive in any
//! number of reads) and bounded: a header whose length exceeds the configured maximum is an error
//! before any of its payload is buffered, and the connection must then be closed (there is no
//! way to find the next record).

use core::fmt;

/// The bytes of a record's header: PPID and length.
pub const HEADER_LEN: usize = 8;

/// Appends one record (header and payload) to `out`. Fails if the payload is longer than the
/// 32-bit length field.
pub fn encode_record(ppid: u32, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FramingError> {
    let len = u32::try_from(payload.len()).map_err(|_| FramingError::TooLong {
        ppid,
        length: payload.len() as u64,
        max: u64::from(u32::MAX),
    })?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&ppid.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// A stream that cannot be framed any more; the connection must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    /// A record's length field exceeds the maximum for its PPID (a lie or a peer that does not
    /// speak this framing).
    TooLong {
        /// The record's PPID.
        ppid: u32,
        /// The length field's value.
        length: u64,
        /// The most this side accepts for that PPID.
        max: u64,
    },
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { ppid, length, max } => write!(
                f,
                "a session record with PPID {ppid} claims {length} bytes, more than the {max} \
                 this side accepts: the peer does not speak the session framing of \
                 docs/session.md or sends larger messages than configured (raise max_data_len)"
            ),
        }
    }
}

impl std::error::Error for FramingError {}

/// An incremental record decoder: [`Self::push`] what a read returned, then take records with
/// [`Self::next_record`] until it returns `Ok(None)`. It holds at most one record's header and
/// declared payload plus the bytes of the last push.
#[derive(Clone, Debug)]
pub struct RecordDecoder {
    buf: Vec<u8>,
    /// Where the undecoded bytes start in `buf`.
    start: usize,
    max_control: usize,
    max_data: usize,
    failed: Option<FramingError>,
}

impl RecordDecoder {
    /// A decoder accepting control records (PPID 11) of up to `max_control` payload bytes and
    /// data records of up to `max_data`.
    pub fn new(max_control: usize, max_data: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_control,
            max_data,
            failed: None,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as records.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete record as (PPID, payload), `Ok(None)` when more bytes are needed, or
    /// the error that ends the stream (returned again on every later call).
    pub fn next_record(&mut self) -> Result<Option<(u32, Vec<u8>)>, FramingError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let rest = &self.buf[self.start..];
        let Some((header, body)) = rest.split_first_chunk::<HEADER_LEN>() else {
            self.compact();
            return Ok(None);
        };
        let [p0, p1, p2, p3, l0, l1, l2, l3] = *header;
        let ppid = u32::from_be_bytes([p0, p1, p2, p3]);
        let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        let max = if ppid == super::PPID_CONTROL {
            self.max_control
        } else {
            self.max_data
        };
        if len > max {
            let e = FramingError::TooLong {
                ppid,
                length: len as u64,
                max: max as u64,
            };
            self.failed = Some(e);
            self.buf = Vec::new();
            self.start = 0;
            return Err(e);
        }
        let Some(payload) = body.get(..len) else {
            self.compact();
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.start += HEADER_LEN + len;
        Ok(Some((ppid, payload)))
    }

    /// Moves a partial record to the buffer's front so the buffer does not grow with the
    /// stream.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}
