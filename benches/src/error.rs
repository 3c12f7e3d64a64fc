//! The load generator's error: one message for the operator, whether it came from a socket, the
//! registrar, setup or the command line.

use std::fmt;
use std::io;

/// Why a benchmark could not run or finish.
#[derive(Debug)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self(e.to_string())
    }
}

/// The load generator's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Adds what was being done to an I/O error.
pub trait Context<T> {
    /// Prefixes the error with `what` ("connect to tcp://...").
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error(format!("{}: {e}", what())))
    }
}
