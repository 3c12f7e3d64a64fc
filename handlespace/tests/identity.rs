//! A PE ID registered with a TLS identity stays bound to it (RFC 5355 §2.3): another identity
//! cannot re-register it, not even from the same host over a newer association (which may
//! otherwise take a PE over, RFC 5352 §3.1), nor can a plain association; the owner can.

use std::net::{IpAddr, Ipv4Addr};

use rserpool_handlespace::*;
use rserpool_protocol::{Policy, TransportKind};

fn registration(id: u64, host: u8) -> PeRegistration {
    let transport = |port| OwnedTransport {
        kind: TransportKind::Tcp,
        port,
        transport_use: 0,
        service_code: 0,
        addresses: vec![IpAddr::V4(Ipv4Addr::new(198, 51, 100, host))].into(),
    };
    PeRegistration {
        id: PeId(id),
        user_transport: OwnedUserTransport::Transport(transport(9)),
        policy: Policy::RoundRobin,
        registration_life: 60_000,
        asap_transport: Some(transport(4000)),
    }
}

#[test]
fn another_identity_cannot_take_a_bound_pe_id_even_from_the_same_host() {
    let mut hs = Handlespace::new(1, Limits::default());
    let shard = hs.shard_mut(b"pool");
    let (a1, a2, a3) = (
        AssociationId::new(1).unwrap(),
        AssociationId::new(2).unwrap(),
        AssociationId::new(3).unwrap(),
    );
    let (alice, mallory) = (0xa11ce, 0xbad);
    shard
        .register_as(b"pool", registration(7, 1), PrId(1), Some(a1), alice, 0)
        .unwrap();
    let e = shard
        .register_as(b"pool", registration(7, 1), PrId(1), Some(a2), mallory, 1)
        .unwrap_err();
    assert_eq!(e, RegistrationError::BoundToAnotherIdentity);
    assert_eq!(e.cause(), rserpool_protocol::cause::REJECTED_SECURITY);
    let e = shard
        .register(b"pool", registration(7, 1), PrId(1), Some(a2), 2)
        .unwrap_err();
    assert_eq!(
        e,
        RegistrationError::BoundToAnotherIdentity,
        "a plain association either"
    );
    // The same identity over a newer association from the same host takes its PE over.
    shard
        .register_as(b"pool", registration(7, 1), PrId(1), Some(a3), alice, 3)
        .unwrap();
    // Without identities, the same host's newer association may (RFC 5352 §3.1).
    shard
        .register(b"pool", registration(8, 1), PrId(1), Some(a1), 4)
        .unwrap();
    shard
        .register(b"pool", registration(8, 1), PrId(1), Some(a2), 5)
        .unwrap();
    // ENRP updates (no association) are not bound.
    shard
        .register(b"pool", registration(7, 1), PrId(2), None, 6)
        .unwrap();
}
