//! The `rserpool-bench` load generator and the cross-crate criterion benches. Not built yet: this
//! crate is a placeholder until the endpoint issue lands; the codec's benches live in
//! `protocol/benches/`.
