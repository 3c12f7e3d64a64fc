//! The Pool Registrar (PR): the ASAP server side and ENRP peer side as a sans-I/O state machine, its
//! I/O drivers and the daemon. Not built yet: this crate is a placeholder until the registrar issue
//! lands.
