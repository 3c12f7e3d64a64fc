//! The RSPLIB corpus: real RSPLIB 3.4.4 traffic (ASAP, ENRP and CSP messages captured over kernel
//! SCTP), one `N proto transport HEX` line per message. The protocol's tests decode and re-encode
//! every message of it; the hostile-input soak of `rserpool-bench` mutates them. Behind the
//! `corpus` feature, so that no other user carries its 166 kB.

/// The corpus file (`tests/data/rsplib-messages.txt`), one message per line.
pub const RSPLIB_MESSAGES: &str = include_str!("../tests/data/rsplib-messages.txt");
