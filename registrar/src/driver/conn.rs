//! A TCP or MPTCP association as the drivers hold it: the socket, a read buffer split into ASAP
//! messages by the header's length field (design §4), and a write buffer that collects every reply
//! of a batch so that they leave in one `write` (research: batching replies per read is what lifts
//! the stream ceiling).

use std::io::{self, Read, Write};

use rserpool_handlespace::{AssociationId, Millis};
use rserpool_protocol::framing::Frames;

use crate::core::{Output, Worker};
use crate::metrics::RequestKind;

/// Above this many unsent bytes the connection is not read until the peer catches up, so that a
/// client that does not read its replies cannot make the registrar buffer without bound.
pub const WRITE_HIGH_WATER: usize = 4 << 20;

/// Why a connection must be closed.
#[derive(Debug)]
pub enum Closed {
    /// The peer closed its side.
    Eof,
    /// The peer sent a stream that cannot be framed (a length below 4 or above the maximum).
    Framing(rserpool_protocol::framing::FramingError),
    /// A socket error.
    Io(io::Error),
}

/// One stream association.
#[derive(Debug)]
pub struct StreamConn<S> {
    /// The socket.
    pub socket: S,
    /// The core's ID of this association.
    pub association: AssociationId,
    read: Vec<u8>,
    read_len: usize,
    write: Vec<u8>,
    written: usize,
}

impl<S: Read + Write> StreamConn<S> {
    /// A connection with a read buffer of `buffer_size` bytes (at least one message of
    /// `max_message` bytes fits).
    pub fn new(
        socket: S,
        association: AssociationId,
        buffer_size: usize,
        max_message: usize,
    ) -> Self {
        Self {
            socket,
            association,
            read: vec![0; buffer_size.max(max_message + 4)],
            read_len: 0,
            write: Vec::new(),
            written: 0,
        }
    }

    /// Whether replies are waiting to be written.
    pub fn wants_write(&self) -> bool {
        self.written < self.write.len()
    }

    /// Whether the connection should not be read until its replies drain.
    pub fn paused(&self) -> bool {
        self.write.len() - self.written > WRITE_HIGH_WATER
    }

    /// Reads what the socket has (at most `budget` reads) and hands every complete message to
    /// the worker; `kinds` collects the requests handled. Returns the number of messages.
    #[allow(clippy::too_many_arguments)]
    pub fn read_and_dispatch(
        &mut self,
        worker: &mut Worker,
        now: Millis,
        out: &mut Output,
        max_message: usize,
        budget: usize,
        kinds: &mut Vec<RequestKind>,
    ) -> Result<usize, Closed> {
        let mut messages = 0;
        for _ in 0..budget.max(1) {
            if self.paused() {
                break;
            }
            let room = self.read.len() - self.read_len;
            let n = match self.socket.read(&mut self.read[self.read_len..]) {
                Ok(0) => return Err(Closed::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Closed::Io(e)),
            };
            self.read_len += n;
            let mut frames = Frames::new(&self.read[..self.read_len], max_message);
            for message in frames.by_ref() {
                kinds.push(worker.on_message(self.association, message, now, out));
                messages += 1;
            }
            if let Some(e) = frames.error() {
                return Err(Closed::Framing(e));
            }
            let consumed = frames.consumed();
            self.read.copy_within(consumed..self.read_len, 0);
            self.read_len -= consumed;
            if n < room {
                // A short read: the socket is drained.
                break;
            }
        }
        Ok(messages)
    }

    /// Appends a reply to the write buffer.
    pub fn queue(&mut self, message: &[u8]) {
        if self.written == self.write.len() {
            self.write.clear();
            self.written = 0;
        }
        self.write.extend_from_slice(message);
    }

    /// Writes as much of the write buffer as the socket takes; `Ok(true)` when all is written.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.written < self.write.len() {
            match self.socket.write(&self.write[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.write.clear();
        self.written = 0;
        Ok(true)
    }
}
