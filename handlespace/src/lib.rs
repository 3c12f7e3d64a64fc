//! The RSerPool handlespace: pools, pool elements (PEs), member-selection policies, registration
//! lifetimes, ownership by home PR and audit checksums. Not built yet: this crate is a placeholder
//! until the handlespace issue lands; today it only re-exports the codec's plain data types.

pub use rserpool_protocol::{Generation, PeId, PrId};
