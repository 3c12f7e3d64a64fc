//! `rserpool-registrar`: the Pool Registrar daemon.

fn main() {}
