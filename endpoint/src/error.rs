//! The errors an endpoint surfaces to its application: unreachable registrars (with the OS error
//! of each attempt), refused requests with their RFC 5354 §3.12 cause, timeouts.

use core::fmt;
use std::net::SocketAddr;

use rserpool_protocol::cause;

use crate::Registrar;

/// An Operation Error cause code (RFC 5354 §3.12) as a registrar sent it. Codes outside the RFC
/// (RSPLIB sends 0x1xxx and 0xfxxx) are kept and named generically (checklist PU-09).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cause(pub u16);

impl Cause {
    /// The RFC 5354 name of the cause, or a generic name for codes the RFC does not define.
    pub const fn name(self) -> &'static str {
        match self.0 {
            cause::UNSPECIFIED => "Unspecified Error",
            cause::UNRECOGNIZED_PARAMETER => "Unrecognized Parameter",
            cause::UNRECOGNIZED_MESSAGE => "Unrecognized Message",
            cause::INVALID_VALUES => "Invalid Values",
            cause::NON_UNIQUE_PE_ID => "Non-unique PE Identifier",
            cause::INCONSISTENT_POLICY => "Inconsistent Pooling Policy",
            cause::LACK_OF_RESOURCES => "Lack of Resources",
            cause::INCONSISTENT_TRANSPORT => "Inconsistent Transport Type",
            cause::INCONSISTENT_DATA_CONTROL => "Inconsistent Data/Control Configuration",
            cause::UNKNOWN_POOL_HANDLE => "Unknown Pool Handle",
            cause::REJECTED_SECURITY => "Rejected due to security considerations",
            _ => "implementation-specific error",
        }
    }
}

impl Cause {
    /// What a refusal with this cause usually means and what to do, for people reading it; empty
    /// when there is nothing to add to the name.
    pub const fn hint(self) -> &'static str {
        match self.0 {
            cause::INVALID_VALUES => {
                "the pool handle is empty or too long for the wire generation, the PE ID is 0, or \
                 the PE's addresses are not among those its connection comes from (RFC 5352 \
                 §2.2.1): register an address the registrar sees"
            }
            cause::LACK_OF_RESOURCES => {
                "a limit of the registrar was reached (pools, PEs per pool or per association, \
                 requests or registrations per second): its metric \
                 rserpool_limit_refusals_total names which"
            }
            cause::INCONSISTENT_POLICY
            | cause::INCONSISTENT_TRANSPORT
            | cause::INCONSISTENT_DATA_CONTROL => {
                "the pool's first PE fixed this for the pool: register with the same, or in \
                 another pool"
            }
            cause::REJECTED_SECURITY => {
                "the registrar's access rules or TLS identities do not allow this, or the PE ID \
                 belongs to another connection or identity"
            }
            _ => "",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (cause {:#06x})", self.name(), self.0)
    }
}

/// One failed connection attempt of a server hunt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectFailure {
    /// The registrar tried.
    pub registrar: Registrar,
    /// What the operating system said (e.g. "Connection refused (os error 111)").
    pub error: String,
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.registrar, self.error)
    }
}

/// A registrar's UDP listener that did not answer a stateless handle resolution
/// ([`crate::driver::resolve_udp`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatagramFailure {
    /// The registrar's UDP address.
    pub address: SocketAddr,
    /// What the operating system said, or that no response came.
    pub error: String,
}

impl fmt::Display for DatagramFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "udp://{}: {}", self.address, self.error)
    }
}

/// Why an endpoint operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// No registrar could be reached: every configured or learnt address failed (RFC 5352
    /// §3.6 server hunt). Empty when no registrar is known at all.
    Unreachable(Vec<ConnectFailure>),
    /// No registrar's UDP listener answered a stateless handle resolution: each one's OS error
    /// or unanswered requests, in the order tried.
    UdpUnreachable(Vec<DatagramFailure>),
    /// A registrar refused the registration (R=1, RFC 5352 §3.1). Never retried unchanged.
    Rejected {
        /// The first cause it gave ([`Cause`]`(0)` when it gave none).
        cause: Cause,
    },
    /// The pool does not exist (cause 0x9, RFC 5352 §3.3).
    UnknownPool {
        /// The pool handle asked for, printable.
        pool_handle: String,
    },
    /// A registrar answered a request with another Operation Error (RFC 5354 §3.12).
    Operation {
        /// The request.
        request: &'static str,
        /// The first cause.
        cause: Cause,
    },
    /// No answer after every allowed attempt (T1/T2/T3 with MAX-REQUEST-RETRANSMIT or
    /// MAX-REG-ATTEMPT, RFC 5352 §3.1, §3.2, §3.7.2).
    Timeout {
        /// The request.
        request: &'static str,
        /// Attempts made.
        attempts: u32,
    },
    /// The configuration cannot work (e.g. a PE ID too wide for the RFC generation).
    Config(String),
    /// The driver stopped (its thread ended).
    Stopped,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(failures) if failures.is_empty() => {
                write!(
                    f,
                    "no registrar is known (configure one or listen for announces)"
                )
            }
            Self::Unreachable(failures) => unreachable(f, failures),
            Self::UdpUnreachable(failures) => unreachable(f, failures),
            Self::Rejected { cause } => {
                write!(f, "registration refused by the registrar: {cause}")?;
                match cause.hint() {
                    "" => Ok(()),
                    hint => write!(f, "; {hint}"),
                }
            }
            Self::UnknownPool { pool_handle } => {
                write!(
                    f,
                    "unknown pool `{pool_handle}` (cause {:#06x})",
                    cause::UNKNOWN_POOL_HANDLE
                )
            }
            Self::Operation { request, cause } => write!(f, "{request} refused: {cause}"),
            Self::Timeout { request, attempts } => write!(
                f,
                "{request}: no answer from any registrar after {attempts} attempt(s)"
            ),
            Self::Config(reason) => write!(f, "invalid configuration: {reason}"),
            Self::Stopped => write!(f, "the endpoint's driver thread stopped"),
        }
    }
}

impl std::error::Error for Error {}

/// "no registrar reachable: " and every failure, separated by semicolons.
fn unreachable<T: fmt::Display>(f: &mut fmt::Formatter<'_>, failures: &[T]) -> fmt::Result {
    write!(f, "no registrar reachable: ")?;
    for (i, failure) in failures.iter().enumerate() {
        if i > 0 {
            f.write_str("; ")?;
        }
        write!(f, "{failure}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_rfc_causes_and_keeps_unknown_codes() {
        assert_eq!(Cause(0x9).name(), "Unknown Pool Handle");
        assert_eq!(
            Cause(0x5).to_string(),
            "Inconsistent Pooling Policy (cause 0x0005)"
        );
        assert_eq!(Cause(0xf005).name(), "implementation-specific error");
        assert!(Cause(0x1003).to_string().contains("0x1003"));
    }

    #[test]
    fn refusals_say_what_the_cause_usually_means() {
        let e = Error::Rejected {
            cause: Cause(cause::INVALID_VALUES),
        };
        let text = e.to_string();
        assert!(text.contains("Invalid Values (cause 0x0003)"), "{text}");
        assert!(
            text.contains("addresses are not among those its connection"),
            "{text}"
        );
        let e = Error::Rejected {
            cause: Cause(cause::REJECTED_SECURITY),
        };
        assert!(e.to_string().contains("access rules or TLS identities"));
        let e = Error::Rejected {
            cause: Cause(cause::LACK_OF_RESOURCES),
        };
        assert!(e.to_string().contains("rserpool_limit_refusals_total"));
        let e = Error::Rejected {
            cause: Cause(cause::UNKNOWN_POOL_HANDLE),
        };
        assert!(!e.to_string().contains(';'), "no hint to add");
    }

    #[test]
    fn unreachable_names_every_address_and_its_os_error() {
        let e = Error::Unreachable(vec![
            ConnectFailure {
                registrar: Registrar::tcp("127.0.0.1:1".parse().unwrap()),
                error: "Connection refused (os error 111)".into(),
            },
            ConnectFailure {
                registrar: Registrar::mptcp("127.0.0.1:2".parse().unwrap()),
                error: "timed out".into(),
            },
        ]);
        let text = e.to_string();
        assert!(text.contains("tcp://127.0.0.1:1: Connection refused (os error 111)"));
        assert!(text.contains("mptcp://127.0.0.1:2: timed out"));
        assert!(
            Error::Unreachable(vec![])
                .to_string()
                .contains("no registrar is known")
        );
        let e = Error::UdpUnreachable(vec![DatagramFailure {
            address: "[::1]:3863".parse().unwrap(),
            error: "no response to 3 request(s)".into(),
        }]);
        assert_eq!(
            e.to_string(),
            "no registrar reachable: udp://[::1]:3863: no response to 3 request(s)"
        );
    }
}
