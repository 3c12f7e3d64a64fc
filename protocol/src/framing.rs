//! Framing of ASAP and ENRP messages on byte streams (TCP, MPTCP): messages stand back to back,
//! each extending over its header's length field rounded up to a multiple of 4 (RFC 5354 §4
//! padding; `docs/wire-format.md`).

use core::fmt;

/// Smallest legal message length (the 4-byte header, RFC 5354 §4).
pub const MIN_MESSAGE_LEN: usize = 4;

/// What the front of a stream buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message occupies the first `len` bytes (padding included).
    Complete {
        /// Bytes the message occupies in the stream, a multiple of 4.
        len: usize,
    },
    /// The message is not complete; at least `needed` more bytes must arrive.
    Incomplete {
        /// Bytes still missing (a lower bound while the header itself is incomplete).
        needed: usize,
    },
}

/// A stream whose next message cannot be framed; the connection must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    /// The length field is below 4.
    TooShort {
        /// The length field's value.
        length: usize,
    },
    /// The length field exceeds the configured maximum.
    TooLong {
        /// The length field's value.
        length: usize,
        /// The configured maximum.
        max: usize,
    },
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { length } => {
                write!(
                    f,
                    "stream message length {length} is below the minimum of 4"
                )
            }
            Self::TooLong { length, max } => write!(
                f,
                "stream message length {length} exceeds the configured maximum of {max}"
            ),
        }
    }
}

impl std::error::Error for FramingError {}

/// Looks at the front of `buf` and says whether a whole message is there. `max_len` is the
/// largest message length accepted (at most 65535, the length field's range).
pub fn next_frame(buf: &[u8], max_len: usize) -> Result<Frame, FramingError> {
    if buf.len() < MIN_MESSAGE_LEN {
        return Ok(Frame::Incomplete {
            needed: MIN_MESSAGE_LEN - buf.len(),
        });
    }
    let length = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if length < MIN_MESSAGE_LEN {
        return Err(FramingError::TooShort { length });
    }
    if length > max_len {
        return Err(FramingError::TooLong {
            length,
            max: max_len,
        });
    }
    let extent = (length + 3) & !3;
    Ok(if buf.len() >= extent {
        Frame::Complete { len: extent }
    } else {
        Frame::Incomplete {
            needed: extent - buf.len(),
        }
    })
}

/// Iterates over the whole messages at the front of a stream buffer. After the iterator ends,
/// [`Frames::consumed`] tells how many bytes to drop and [`Frames::error`] whether the stream is
/// broken.
#[derive(Clone, Debug)]
pub struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
    max_len: usize,
    needed: usize,
    error: Option<FramingError>,
}

impl<'a> Frames<'a> {
    /// Frames over `buf` accepting messages up to `max_len` bytes.
    pub fn new(buf: &'a [u8], max_len: usize) -> Self {
        Self {
            buf,
            pos: 0,
            max_len,
            needed: 0,
            error: None,
        }
    }

    /// Bytes taken by the messages returned so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// Bytes still needed to complete the next message, once iteration stopped on an incomplete one.
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// The framing error that stopped iteration, if any.
    pub fn error(&self) -> Option<FramingError> {
        self.error
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.error.is_some() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        match next_frame(rest, self.max_len) {
            Ok(Frame::Complete { len }) => {
                self.pos += len;
                Some(&rest[..len])
            }
            Ok(Frame::Incomplete { needed }) => {
                self.needed = needed;
                None
            }
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}
