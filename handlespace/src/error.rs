//! Why the handlespace refuses a registration or a change, with the RFC 5354 §3.12 cause each
//! refusal is answered with.

use core::fmt;

use rserpool_protocol::{Policy, cause};

use crate::entry::OwnedUserTransport;

/// Why a registration (ASAP or ENRP) was refused (RFC 5352 §3.1 rules 2-5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationError {
    /// PE identifier 0, an empty or over-long pool handle, or another impossible value.
    InvalidValue {
        /// What is wrong.
        reason: &'static str,
    },
    /// The PE's policy type differs from the pool's (cause 0x5, info: the pool's policy).
    InconsistentPolicy {
        /// The pool's policy, for the cause info.
        pool_policy: Policy,
    },
    /// The PE's user transport type differs from the pool's (cause 0x7, info: the pool's
    /// transport).
    InconsistentTransport {
        /// A transport of the pool, for the cause info.
        pool_transport: OwnedUserTransport,
    },
    /// Data-only versus data-plus-control differs from the pool's (cause 0x8).
    InconsistentDataControl,
    /// A configured limit is reached (cause 0x6).
    LackOfResources {
        /// Which limit.
        limit: &'static str,
    },
    /// The PE is registered over another association; a PE may only change itself (cause 0xa,
    /// RFC 5352 §2.2.2, RFC 5355 §2.3.3).
    NotOwner,
    /// The PE ID is bound to the TLS identity that registered it, and another identity asked
    /// (cause 0xa, RFC 5355 §2.3).
    BoundToAnotherIdentity,
}

impl RegistrationError {
    /// The Operation Error cause code to answer with.
    pub fn cause(&self) -> u16 {
        match self {
            Self::InvalidValue { .. } => cause::INVALID_VALUES,
            Self::InconsistentPolicy { .. } => cause::INCONSISTENT_POLICY,
            Self::InconsistentTransport { .. } => cause::INCONSISTENT_TRANSPORT,
            Self::InconsistentDataControl => cause::INCONSISTENT_DATA_CONTROL,
            Self::LackOfResources { .. } => cause::LACK_OF_RESOURCES,
            Self::NotOwner | Self::BoundToAnotherIdentity => cause::REJECTED_SECURITY,
        }
    }
}

impl fmt::Display for RegistrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidValue { reason } => write!(f, "invalid registration: {reason}"),
            Self::InconsistentPolicy { pool_policy } => write!(
                f,
                "the pool uses policy {:#010x}; register with the same policy type",
                pool_policy.policy_type()
            ),
            Self::InconsistentTransport { .. } => {
                write!(f, "the pool's PEs use another transport type")
            }
            Self::InconsistentDataControl => write!(
                f,
                "the pool's PEs use another data/control channel configuration"
            ),
            Self::LackOfResources { limit } => write!(f, "limit reached: {limit}"),
            Self::NotOwner => write!(
                f,
                "the PE is registered over another association; only that association may change it"
            ),
            Self::BoundToAnotherIdentity => write!(
                f,
                "the PE ID was registered by another TLS identity; only that identity may \
                 re-register it"
            ),
        }
    }
}

impl std::error::Error for RegistrationError {}
