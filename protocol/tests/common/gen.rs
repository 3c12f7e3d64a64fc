//! Owned models of every ASAP, ENRP and CSP message, proptest strategies generating them, the
//! borrowed views the codec encodes, a TLV walker over encoded messages, and deep consistency
//! checks of decoded messages. Shared by `roundtrip.rs` and `hostile.rs`, which declare it with
//! `#[path = "common/gen.rs"] mod wiregen;` (`gen` is a keyword in edition 2024).
#![allow(dead_code)] // each test binary uses its own subset

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, Union, ValueTree};
use proptest::test_runner::{Config, TestRunner};
use rserpool_protocol::csp::{self, CspAssociation, CspReport};
use rserpool_protocol::*;

/// The proptest configuration of this crate's property tests: no regression files are written
/// (the tests directory belongs to several people).
pub fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Draws `n` values from `strategy` with a fixed seed (for exhaustive deterministic tests).
pub fn samples<S: Strategy>(strategy: &S, n: usize) -> Vec<S::Value> {
    let mut runner = TestRunner::deterministic();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// Width of a PE or PR identifier on the wire.
pub const fn id_width(g: Generation) -> usize {
    match g {
        Generation::Rfc => 4,
        Generation::Ng => 8,
    }
}

/// The other generation.
pub const fn other(g: Generation) -> Generation {
    match g {
        Generation::Rfc => Generation::Ng,
        Generation::Ng => Generation::Rfc,
    }
}

// ---------------------------------------------------------------------------------------------
// Owned model
// ---------------------------------------------------------------------------------------------

/// A transport parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct OTransport {
    pub kind: TransportKind,
    pub port: u16,
    pub transport_use: u16,
    pub service_code: u32,
    pub addresses: Vec<IpAddr>,
}

impl OTransport {
    pub fn view(&self) -> TransportParam<'_> {
        TransportParam {
            kind: self.kind,
            port: self.port,
            transport_use: self.transport_use,
            service_code: self.service_code,
            addresses: Seq::from_items(&self.addresses),
        }
    }
}

/// A PE's user transport.
#[derive(Clone, Debug, PartialEq)]
pub enum OUserTransport {
    Transport(OTransport),
    Opaque(Vec<u8>),
}

/// A Pool Element parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct OPoolElement {
    pub id: u64,
    pub home_pr: u64,
    pub registration_life: i32,
    pub user_transport: OUserTransport,
    pub policy: Policy,
    pub asap_transport: Option<OTransport>,
}

impl OPoolElement {
    pub fn view(&self) -> PoolElementParam<'_> {
        PoolElementParam {
            id: PeId(self.id),
            home_pr: PrId(self.home_pr),
            registration_life: self.registration_life,
            user_transport: match &self.user_transport {
                OUserTransport::Transport(t) => UserTransport::Transport(t.view()),
                OUserTransport::Opaque(b) => UserTransport::Opaque(b),
            },
            policy: self.policy,
            asap_transport: self.asap_transport.as_ref().map(OTransport::view),
        }
    }

    fn id_slots(&mut self) -> Vec<&mut u64> {
        vec![&mut self.id, &mut self.home_pr]
    }
}

/// A Server Information parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct OServerInfo {
    pub server_id: u64,
    pub transport: OTransport,
}

impl OServerInfo {
    pub fn view(&self) -> ServerInformation<'_> {
        ServerInformation {
            server_id: PrId(self.server_id),
            transport: self.transport.view(),
        }
    }
}

/// An error cause.
#[derive(Clone, Debug, PartialEq)]
pub struct OCause {
    pub code: u16,
    pub info: Vec<u8>,
}

fn cause_views(c: &[OCause]) -> Vec<ErrorCause<'_>> {
    c.iter()
        .map(|c| ErrorCause {
            code: c.code,
            info: &c.info,
        })
        .collect()
}

fn pe_views(p: &[OPoolElement]) -> Vec<PoolElementParam<'_>> {
    p.iter().map(OPoolElement::view).collect()
}

fn pe_slots(p: &mut [OPoolElement]) -> Vec<&mut u64> {
    p.iter_mut().flat_map(OPoolElement::id_slots).collect()
}

/// Result of a handle resolution.
#[derive(Clone, Debug, PartialEq)]
pub enum OResolution {
    Found {
        policy: Option<Policy>,
        pool_elements: Vec<OPoolElement>,
    },
    Failed(Vec<OCause>),
}

/// An ASAP message.
#[derive(Clone, Debug, PartialEq)]
pub enum OAsap {
    Registration {
        pool_handle: Vec<u8>,
        pool_element: OPoolElement,
    },
    Deregistration {
        pool_handle: Vec<u8>,
        pe_id: u64,
    },
    RegistrationResponse {
        rejected: bool,
        pool_handle: Vec<u8>,
        pe_id: u64,
        error: Option<Vec<OCause>>,
    },
    DeregistrationResponse {
        pool_handle: Vec<u8>,
        pe_id: u64,
        error: Option<Vec<OCause>>,
    },
    HandleResolution {
        subscribe: bool,
        pool_handle: Vec<u8>,
        items: Option<u32>,
    },
    HandleResolutionResponse {
        accepted: bool,
        pool_handle: Vec<u8>,
        resolution: OResolution,
    },
    EndpointKeepAlive {
        home: bool,
        server_id: u64,
        pool_handle: Vec<u8>,
        pe_id: Option<u64>,
    },
    EndpointKeepAliveAck {
        pool_handle: Vec<u8>,
        pe_id: u64,
    },
    EndpointUnreachable {
        pool_handle: Vec<u8>,
        pe_id: u64,
    },
    ServerAnnounce {
        server_id: u64,
        transports: Vec<OTransport>,
    },
    Cookie(Vec<u8>),
    CookieEcho(Vec<u8>),
    BusinessCard {
        pool_handle: Vec<u8>,
        policy: Option<Policy>,
        pool_elements: Vec<OPoolElement>,
    },
    Error(Vec<OCause>),
}

impl OAsap {
    /// Calls `f` with the borrowed message this model describes.
    pub fn with_view<R>(&self, f: impl FnOnce(AsapMessage<'_>) -> R) -> R {
        match self {
            Self::Registration {
                pool_handle,
                pool_element,
            } => f(AsapMessage::Registration {
                pool_handle: PoolHandle(pool_handle),
                pool_element: pool_element.view(),
            }),
            Self::Deregistration { pool_handle, pe_id } => f(AsapMessage::Deregistration {
                pool_handle: PoolHandle(pool_handle),
                pe_id: PeId(*pe_id),
            }),
            Self::RegistrationResponse {
                rejected,
                pool_handle,
                pe_id,
                error,
            } => {
                let causes = error.as_deref().map(cause_views);
                f(AsapMessage::RegistrationResponse {
                    rejected: *rejected,
                    pool_handle: PoolHandle(pool_handle),
                    pe_id: PeId(*pe_id),
                    error: causes.as_deref().map(Seq::from_items),
                })
            }
            Self::DeregistrationResponse {
                pool_handle,
                pe_id,
                error,
            } => {
                let causes = error.as_deref().map(cause_views);
                f(AsapMessage::DeregistrationResponse {
                    pool_handle: PoolHandle(pool_handle),
                    pe_id: PeId(*pe_id),
                    error: causes.as_deref().map(Seq::from_items),
                })
            }
            Self::HandleResolution {
                subscribe,
                pool_handle,
                items,
            } => f(AsapMessage::HandleResolution {
                subscribe: *subscribe,
                pool_handle: PoolHandle(pool_handle),
                items: *items,
            }),
            Self::HandleResolutionResponse {
                accepted,
                pool_handle,
                resolution,
            } => match resolution {
                OResolution::Found {
                    policy,
                    pool_elements,
                } => {
                    let pes = pe_views(pool_elements);
                    f(AsapMessage::HandleResolutionResponse {
                        accepted: *accepted,
                        pool_handle: PoolHandle(pool_handle),
                        resolution: Resolution::Found {
                            policy: *policy,
                            pool_elements: Seq::from_items(&pes),
                        },
                    })
                }
                OResolution::Failed(c) => {
                    let causes = cause_views(c);
                    f(AsapMessage::HandleResolutionResponse {
                        accepted: *accepted,
                        pool_handle: PoolHandle(pool_handle),
                        resolution: Resolution::Failed(Seq::from_items(&causes)),
                    })
                }
            },
            Self::EndpointKeepAlive {
                home,
                server_id,
                pool_handle,
                pe_id,
            } => f(AsapMessage::EndpointKeepAlive {
                home: *home,
                server_id: PrId(*server_id),
                pool_handle: PoolHandle(pool_handle),
                pe_id: pe_id.map(PeId),
            }),
            Self::EndpointKeepAliveAck { pool_handle, pe_id } => {
                f(AsapMessage::EndpointKeepAliveAck {
                    pool_handle: PoolHandle(pool_handle),
                    pe_id: PeId(*pe_id),
                })
            }
            Self::EndpointUnreachable { pool_handle, pe_id } => {
                f(AsapMessage::EndpointUnreachable {
                    pool_handle: PoolHandle(pool_handle),
                    pe_id: PeId(*pe_id),
                })
            }
            Self::ServerAnnounce {
                server_id,
                transports,
            } => {
                let ts: Vec<TransportParam<'_>> = transports.iter().map(OTransport::view).collect();
                f(AsapMessage::ServerAnnounce {
                    server_id: PrId(*server_id),
                    transports: Seq::from_items(&ts),
                })
            }
            Self::Cookie(c) => f(AsapMessage::Cookie(c)),
            Self::CookieEcho(c) => f(AsapMessage::CookieEcho(c)),
            Self::BusinessCard {
                pool_handle,
                policy,
                pool_elements,
            } => {
                let pes = pe_views(pool_elements);
                f(AsapMessage::BusinessCard {
                    pool_handle: PoolHandle(pool_handle),
                    policy: *policy,
                    pool_elements: Seq::from_items(&pes),
                })
            }
            Self::Error(c) => {
                let causes = cause_views(c);
                f(AsapMessage::Error(Seq::from_items(&causes)))
            }
        }
    }

    /// Every PE or PR identifier the message carries, in wire order.
    pub fn id_slots(&mut self) -> Vec<&mut u64> {
        match self {
            Self::Registration { pool_element, .. } => pool_element.id_slots(),
            Self::Deregistration { pe_id, .. }
            | Self::RegistrationResponse { pe_id, .. }
            | Self::DeregistrationResponse { pe_id, .. }
            | Self::EndpointKeepAliveAck { pe_id, .. }
            | Self::EndpointUnreachable { pe_id, .. } => vec![pe_id],
            Self::HandleResolutionResponse {
                resolution: OResolution::Found { pool_elements, .. },
                ..
            }
            | Self::BusinessCard { pool_elements, .. } => pe_slots(pool_elements),
            Self::EndpointKeepAlive {
                server_id, pe_id, ..
            } => {
                let mut v = vec![server_id];
                v.extend(pe_id.as_mut());
                v
            }
            Self::ServerAnnounce { server_id, .. } => vec![server_id],
            Self::HandleResolution { .. }
            | Self::HandleResolutionResponse { .. }
            | Self::Cookie(_)
            | Self::CookieEcho(_)
            | Self::Error(_) => vec![],
        }
    }
}

/// The body of an ENRP message.
#[derive(Clone, Debug, PartialEq)]
pub enum OEnrpBody {
    Presence {
        reply_required: bool,
        checksum: Option<u64>,
        server_information: Option<OServerInfo>,
    },
    HandleTableRequest {
        own_children_only: bool,
    },
    HandleTableResponse {
        reject: bool,
        more_to_send: bool,
        entries: Vec<(Vec<u8>, Vec<OPoolElement>)>,
    },
    HandleUpdate {
        takeover_suggested: bool,
        action: UpdateAction,
        pool_handle: Vec<u8>,
        pool_element: OPoolElement,
    },
    ListRequest,
    ListResponse {
        reject: bool,
        servers: Vec<OServerInfo>,
    },
    InitTakeover {
        target: u64,
    },
    InitTakeoverAck {
        target: u64,
    },
    TakeoverServer {
        target: u64,
    },
    Error(Vec<OCause>),
}

/// An ENRP message.
#[derive(Clone, Debug, PartialEq)]
pub struct OEnrp {
    pub sender: u64,
    pub receiver: u64,
    pub body: OEnrpBody,
}

impl OEnrp {
    /// Calls `f` with the borrowed message this model describes.
    pub fn with_view<R>(&self, f: impl FnOnce(EnrpMessage<'_>) -> R) -> R {
        let msg = |body| EnrpMessage {
            sender: PrId(self.sender),
            receiver: PrId(self.receiver),
            body,
        };
        match &self.body {
            OEnrpBody::Presence {
                reply_required,
                checksum,
                server_information,
            } => f(msg(EnrpBody::Presence {
                reply_required: *reply_required,
                checksum: *checksum,
                server_information: server_information.as_ref().map(OServerInfo::view),
            })),
            OEnrpBody::HandleTableRequest { own_children_only } => {
                f(msg(EnrpBody::HandleTableRequest {
                    own_children_only: *own_children_only,
                }))
            }
            OEnrpBody::HandleTableResponse {
                reject,
                more_to_send,
                entries,
            } => {
                let pe_lists: Vec<Vec<PoolElementParam<'_>>> =
                    entries.iter().map(|(_, pes)| pe_views(pes)).collect();
                let views: Vec<PoolEntry<'_>> = entries
                    .iter()
                    .zip(&pe_lists)
                    .map(|((h, _), pes)| PoolEntry {
                        pool_handle: PoolHandle(h),
                        pool_elements: Seq::from_items(pes),
                    })
                    .collect();
                f(msg(EnrpBody::HandleTableResponse {
                    reject: *reject,
                    more_to_send: *more_to_send,
                    entries: Seq::from_items(&views),
                }))
            }
            OEnrpBody::HandleUpdate {
                takeover_suggested,
                action,
                pool_handle,
                pool_element,
            } => f(msg(EnrpBody::HandleUpdate {
                takeover_suggested: *takeover_suggested,
                action: *action,
                pool_handle: PoolHandle(pool_handle),
                pool_element: pool_element.view(),
            })),
            OEnrpBody::ListRequest => f(msg(EnrpBody::ListRequest)),
            OEnrpBody::ListResponse { reject, servers } => {
                let views: Vec<ServerInformation<'_>> =
                    servers.iter().map(OServerInfo::view).collect();
                f(msg(EnrpBody::ListResponse {
                    reject: *reject,
                    servers: Seq::from_items(&views),
                }))
            }
            OEnrpBody::InitTakeover { target } => f(msg(EnrpBody::InitTakeover {
                target: PrId(*target),
            })),
            OEnrpBody::InitTakeoverAck { target } => f(msg(EnrpBody::InitTakeoverAck {
                target: PrId(*target),
            })),
            OEnrpBody::TakeoverServer { target } => f(msg(EnrpBody::TakeoverServer {
                target: PrId(*target),
            })),
            OEnrpBody::Error(c) => {
                let causes = cause_views(c);
                f(msg(EnrpBody::Error(Seq::from_items(&causes))))
            }
        }
    }

    /// Every PE or PR identifier the message carries, in wire order.
    pub fn id_slots(&mut self) -> Vec<&mut u64> {
        let mut v = vec![&mut self.sender, &mut self.receiver];
        match &mut self.body {
            OEnrpBody::Presence {
                server_information: Some(s),
                ..
            } => v.push(&mut s.server_id),
            OEnrpBody::HandleTableResponse { entries, .. } => {
                for (_, pes) in entries {
                    v.extend(pe_slots(pes));
                }
            }
            OEnrpBody::HandleUpdate { pool_element, .. } => v.extend(pool_element.id_slots()),
            OEnrpBody::ListResponse { servers, .. } => {
                v.extend(servers.iter_mut().map(|s| &mut s.server_id));
            }
            OEnrpBody::InitTakeover { target }
            | OEnrpBody::InitTakeoverAck { target }
            | OEnrpBody::TakeoverServer { target } => v.push(target),
            OEnrpBody::Presence { .. }
            | OEnrpBody::HandleTableRequest { .. }
            | OEnrpBody::ListRequest
            | OEnrpBody::Error(_) => {}
        }
        v
    }
}

/// A CSP report.
#[derive(Clone, Debug, PartialEq)]
pub struct OCsp {
    pub final_report: bool,
    pub sender_id: u64,
    pub timestamp_us: u64,
    pub report_interval_us: u32,
    pub location: Vec<u8>,
    pub status: Vec<u8>,
    pub workload: u16,
    pub associations: Vec<CspAssociation>,
}

impl OCsp {
    pub fn view(&self) -> CspReport<'_> {
        CspReport {
            final_report: self.final_report,
            sender_id: self.sender_id,
            timestamp_us: self.timestamp_us,
            report_interval_us: self.report_interval_us,
            location: &self.location,
            status: &self.status,
            workload: self.workload,
            associations: Seq::from_items(&self.associations),
        }
    }

    /// The report a receiver sees: texts cut to 127 bytes and without trailing NULs.
    pub fn as_received(&self) -> Self {
        let text = |t: &[u8]| {
            let mut v = t[..t.len().min(127)].to_vec();
            while v.last() == Some(&0) {
                v.pop();
            }
            v
        };
        Self {
            location: text(&self.location),
            status: text(&self.status),
            ..self.clone()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// A PE or PR identifier of the generation's range, with the edges weighted up.
pub fn id(g: Generation) -> BoxedStrategy<u64> {
    match g {
        Generation::Rfc => prop_oneof![
            1 => Just(0u64),
            1 => Just(1u64),
            1 => Just(u64::from(u32::MAX)),
            7 => any::<u32>().prop_map(u64::from),
        ]
        .boxed(),
        Generation::Ng => prop_oneof![
            1 => Just(0u64),
            1 => Just(u64::MAX),
            1 => Just(u64::from(u32::MAX) + 1),
            7 => any::<u64>(),
        ]
        .boxed(),
    }
}

/// An identifier that does not fit the RFC generation's 32 bits.
pub fn wide_id() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::from(u32::MAX) + 1),
        Just(u64::MAX),
        (u64::from(u32::MAX) + 1)..=u64::MAX,
    ]
}

/// A handlespace checksum of the generation's width.
pub fn checksum(g: Generation) -> BoxedStrategy<u64> {
    match g {
        Generation::Rfc => any::<u16>().prop_map(u64::from).boxed(),
        Generation::Ng => any::<u64>().boxed(),
    }
}

pub fn bytes(min: usize, max: usize) -> BoxedStrategy<Vec<u8>> {
    prop::collection::vec(any::<u8>(), min..=max).boxed()
}

/// A pool handle: 1..=64 arbitrary bytes.
pub fn pool_handle() -> BoxedStrategy<Vec<u8>> {
    bytes(1, 64)
}

pub fn ip() -> BoxedStrategy<IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
    .boxed()
}

pub const TRANSPORT_KINDS: [TransportKind; 5] = [
    TransportKind::Sctp,
    TransportKind::Tcp,
    TransportKind::Udp,
    TransportKind::UdpLite,
    TransportKind::Dccp,
];

/// A transport of any kind: SCTP with 1..=8 mixed addresses, the others with exactly one;
/// a service code only for DCCP.
pub fn transport() -> BoxedStrategy<OTransport> {
    (
        prop::sample::select(&TRANSPORT_KINDS[..]),
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
    )
        .prop_flat_map(|(kind, port, transport_use, sc)| {
            let n = if kind == TransportKind::Sctp {
                1..=8usize
            } else {
                1..=1
            };
            prop::collection::vec(ip(), n).prop_map(move |addresses| OTransport {
                kind,
                port,
                transport_use,
                service_code: if kind == TransportKind::Dccp { sc } else { 0 },
                addresses,
            })
        })
        .boxed()
}

/// The 18 policies, each with arbitrary fields.
pub fn policy_arms() -> Vec<BoxedStrategy<Policy>> {
    let u = any::<u32>;
    vec![
        Just(Policy::RoundRobin).boxed(),
        u().prop_map(|weight| Policy::WeightedRoundRobin { weight })
            .boxed(),
        Just(Policy::Random).boxed(),
        u().prop_map(|weight| Policy::WeightedRandom { weight })
            .boxed(),
        u().prop_map(|priority| Policy::Priority { priority })
            .boxed(),
        u().prop_map(|load| Policy::LeastUsed { load }).boxed(),
        (u(), u())
            .prop_map(|(load, load_degradation)| Policy::LeastUsedDegradation {
                load,
                load_degradation,
            })
            .boxed(),
        (u(), u())
            .prop_map(|(load, load_degradation)| Policy::PriorityLeastUsed {
                load,
                load_degradation,
            })
            .boxed(),
        u().prop_map(|load| Policy::RandomizedLeastUsed { load })
            .boxed(),
        (u(), u())
            .prop_map(
                |(load, load_degradation)| Policy::RandomizedPriorityLeastUsed {
                    load,
                    load_degradation,
                },
            )
            .boxed(),
        (u(), u())
            .prop_map(
                |(load, load_degradation)| Policy::RandomizedLeastUsedDegradation {
                    load,
                    load_degradation,
                },
            )
            .boxed(),
        (u(), u())
            .prop_map(
                |(load, load_degradation)| Policy::PriorityLeastUsedDegradation {
                    load,
                    load_degradation,
                },
            )
            .boxed(),
        (u(), u())
            .prop_map(
                |(load, load_degradation)| Policy::RandomizedPriorityLeastUsedDegradation {
                    load,
                    load_degradation,
                },
            )
            .boxed(),
        (u(), u(), u())
            .prop_map(|(weight, weight_dpf, distance)| Policy::WeightedRandomDpf {
                weight,
                weight_dpf,
                distance,
            })
            .boxed(),
        (u(), u(), u())
            .prop_map(|(load, load_dpf, distance)| Policy::LeastUsedDpf {
                load,
                load_dpf,
                distance,
            })
            .boxed(),
        (u(), u(), u(), u())
            .prop_map(|(load, load_degradation, load_dpf, distance)| {
                Policy::LeastUsedDegradationDpf {
                    load,
                    load_degradation,
                    load_dpf,
                    distance,
                }
            })
            .boxed(),
        (u(), u(), u(), u())
            .prop_map(
                |(load, load_degradation, load_dpf, distance)| Policy::PriorityLeastUsedDpf {
                    load,
                    load_degradation,
                    load_dpf,
                    distance,
                },
            )
            .boxed(),
        (u(), u(), u(), u())
            .prop_map(|(load, load_degradation, load_dpf, distance)| {
                Policy::PriorityLeastUsedDegradationDpf {
                    load,
                    load_degradation,
                    load_dpf,
                    distance,
                }
            })
            .boxed(),
    ]
}

pub fn policy() -> BoxedStrategy<Policy> {
    Union::new(policy_arms()).boxed()
}

pub fn user_transport() -> BoxedStrategy<OUserTransport> {
    prop_oneof![
        4 => transport().prop_map(OUserTransport::Transport),
        1 => bytes(0, 40).prop_map(OUserTransport::Opaque),
    ]
    .boxed()
}

pub fn pool_element(g: Generation) -> BoxedStrategy<OPoolElement> {
    (
        id(g),
        id(g),
        prop_oneof![Just(REGISTRATION_LIFE_INFINITE), any::<i32>()],
        user_transport(),
        policy(),
        prop::option::of(transport()),
    )
        .prop_map(
            |(id, home_pr, registration_life, user_transport, policy, asap_transport)| {
                OPoolElement {
                    id,
                    home_pr,
                    registration_life,
                    user_transport,
                    policy,
                    asap_transport,
                }
            },
        )
        .boxed()
}

/// 1..=5 pool elements.
pub fn pool_elements(g: Generation) -> BoxedStrategy<Vec<OPoolElement>> {
    prop::collection::vec(pool_element(g), 1..=5).boxed()
}

pub fn server_info(g: Generation) -> BoxedStrategy<OServerInfo> {
    (id(g), transport())
        .prop_map(|(server_id, transport)| OServerInfo {
            server_id,
            transport,
        })
        .boxed()
}

pub fn cause() -> BoxedStrategy<OCause> {
    (
        prop_oneof![0u16..=0x000b, Just(0x100b), any::<u16>()],
        bytes(0, 24),
    )
        .prop_map(|(code, info)| OCause { code, info })
        .boxed()
}

/// An operation error: 1..=4 causes.
pub fn causes() -> BoxedStrategy<Vec<OCause>> {
    prop::collection::vec(cause(), 1..=4).boxed()
}

/// One strategy per ASAP message type, in type-code order (index `i` makes type `i + 1`).
pub fn asap_variants(g: Generation) -> Vec<BoxedStrategy<OAsap>> {
    let h = pool_handle;
    vec![
        (h(), pool_element(g))
            .prop_map(|(pool_handle, pool_element)| OAsap::Registration {
                pool_handle,
                pool_element,
            })
            .boxed(),
        (h(), id(g))
            .prop_map(|(pool_handle, pe_id)| OAsap::Deregistration { pool_handle, pe_id })
            .boxed(),
        (any::<bool>(), h(), id(g), prop::option::of(causes()))
            .prop_map(
                |(rejected, pool_handle, pe_id, error)| OAsap::RegistrationResponse {
                    rejected,
                    pool_handle,
                    pe_id,
                    error,
                },
            )
            .boxed(),
        (h(), id(g), prop::option::of(causes()))
            .prop_map(
                |(pool_handle, pe_id, error)| OAsap::DeregistrationResponse {
                    pool_handle,
                    pe_id,
                    error,
                },
            )
            .boxed(),
        (any::<bool>(), h(), prop::option::of(any::<u32>()))
            .prop_map(|(subscribe, pool_handle, items)| OAsap::HandleResolution {
                subscribe,
                pool_handle,
                items,
            })
            .boxed(),
        (
            any::<bool>(),
            h(),
            prop_oneof![
                3 => (prop::option::of(policy()), pool_elements(g)).prop_map(
                    |(policy, pool_elements)| OResolution::Found {
                        policy,
                        pool_elements
                    }
                ),
                1 => causes().prop_map(OResolution::Failed),
            ],
        )
            .prop_map(
                |(accepted, pool_handle, resolution)| OAsap::HandleResolutionResponse {
                    accepted,
                    pool_handle,
                    resolution,
                },
            )
            .boxed(),
        (any::<bool>(), id(g), h(), prop::option::of(id(g)))
            .prop_map(
                |(home, server_id, pool_handle, pe_id)| OAsap::EndpointKeepAlive {
                    home,
                    server_id,
                    pool_handle,
                    pe_id,
                },
            )
            .boxed(),
        (h(), id(g))
            .prop_map(|(pool_handle, pe_id)| OAsap::EndpointKeepAliveAck { pool_handle, pe_id })
            .boxed(),
        (h(), id(g))
            .prop_map(|(pool_handle, pe_id)| OAsap::EndpointUnreachable { pool_handle, pe_id })
            .boxed(),
        (id(g), prop::collection::vec(transport(), 0..=4))
            .prop_map(|(server_id, transports)| OAsap::ServerAnnounce {
                server_id,
                transports,
            })
            .boxed(),
        bytes(0, 80).prop_map(OAsap::Cookie).boxed(),
        bytes(0, 80).prop_map(OAsap::CookieEcho).boxed(),
        (h(), prop::option::of(policy()), pool_elements(g))
            .prop_map(|(pool_handle, policy, pool_elements)| OAsap::BusinessCard {
                pool_handle,
                policy,
                pool_elements,
            })
            .boxed(),
        causes().prop_map(OAsap::Error).boxed(),
    ]
}

pub fn asap(g: Generation) -> BoxedStrategy<OAsap> {
    Union::new(asap_variants(g)).boxed()
}

/// One strategy per ENRP message type, in type-code order (index `i` makes type `i + 1`).
pub fn enrp_variants(g: Generation) -> Vec<BoxedStrategy<OEnrp>> {
    let bodies: Vec<BoxedStrategy<OEnrpBody>> = vec![
        (
            any::<bool>(),
            prop::option::of(checksum(g)),
            prop::option::of(server_info(g)),
        )
            .prop_map(
                |(reply_required, checksum, server_information)| OEnrpBody::Presence {
                    reply_required,
                    checksum,
                    server_information,
                },
            )
            .boxed(),
        any::<bool>()
            .prop_map(|own_children_only| OEnrpBody::HandleTableRequest { own_children_only })
            .boxed(),
        (
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec((pool_handle(), pool_elements(g)), 0..=3),
        )
            .prop_map(
                |(reject, more_to_send, entries)| OEnrpBody::HandleTableResponse {
                    reject,
                    more_to_send,
                    entries,
                },
            )
            .boxed(),
        (
            any::<bool>(),
            prop_oneof![Just(UpdateAction::AddPe), Just(UpdateAction::DelPe)],
            pool_handle(),
            pool_element(g),
        )
            .prop_map(|(takeover_suggested, action, pool_handle, pool_element)| {
                OEnrpBody::HandleUpdate {
                    takeover_suggested,
                    action,
                    pool_handle,
                    pool_element,
                }
            })
            .boxed(),
        Just(OEnrpBody::ListRequest).boxed(),
        (any::<bool>(), prop::collection::vec(server_info(g), 0..=4))
            .prop_map(|(reject, servers)| OEnrpBody::ListResponse { reject, servers })
            .boxed(),
        id(g)
            .prop_map(|target| OEnrpBody::InitTakeover { target })
            .boxed(),
        id(g)
            .prop_map(|target| OEnrpBody::InitTakeoverAck { target })
            .boxed(),
        id(g)
            .prop_map(|target| OEnrpBody::TakeoverServer { target })
            .boxed(),
        causes().prop_map(OEnrpBody::Error).boxed(),
    ];
    bodies
        .into_iter()
        .map(|body| {
            (id(g), id(g), body)
                .prop_map(|(sender, receiver, body)| OEnrp {
                    sender,
                    receiver,
                    body,
                })
                .boxed()
        })
        .collect()
}

pub fn enrp(g: Generation) -> BoxedStrategy<OEnrp> {
    Union::new(enrp_variants(g)).boxed()
}

pub fn csp_association() -> BoxedStrategy<CspAssociation> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
    )
        .prop_map(
            |(receiver_id, duration, flags, protocol_id, ppid)| CspAssociation {
                receiver_id,
                duration,
                flags,
                protocol_id,
                ppid,
            },
        )
        .boxed()
}

/// A CSP report; texts of 0..=160 bytes (longer than the 127 the wire keeps, sometimes with
/// trailing NULs).
pub fn csp() -> BoxedStrategy<OCsp> {
    let text = prop_oneof![
        3 => bytes(0, 127),
        1 => bytes(0, 160),
        1 => (bytes(0, 60), 1..=8usize).prop_map(|(mut v, n)| {
            v.extend(std::iter::repeat_n(0u8, n));
            v
        }),
    ];
    (
        (any::<bool>(), any::<u64>(), any::<u64>(), any::<u32>()),
        text.clone(),
        text,
        any::<u16>(),
        prop::collection::vec(csp_association(), 0..=8),
    )
        .prop_map(
            |(
                (final_report, sender_id, timestamp_us, report_interval_us),
                location,
                status,
                workload,
                associations,
            )| OCsp {
                final_report,
                sender_id,
                timestamp_us,
                report_interval_us,
                location,
                status,
                workload,
                associations,
            },
        )
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// Encoding helpers
// ---------------------------------------------------------------------------------------------

/// Encodes into a fresh 64 KiB buffer and returns the bytes.
pub fn encode_asap(m: &AsapMessage<'_>, g: Generation) -> Result<Vec<u8>, EncodeError> {
    let mut buf = vec![0u8; 65536];
    let n = m.encode(g, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Encodes into a fresh 64 KiB buffer and returns the bytes.
pub fn encode_enrp(m: &EnrpMessage<'_>, g: Generation) -> Result<Vec<u8>, EncodeError> {
    let mut buf = vec![0u8; 65536];
    let n = m.encode(g, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Encodes into a fresh 64 KiB buffer and returns the bytes.
pub fn encode_csp(m: &CspReport<'_>) -> Result<Vec<u8>, EncodeError> {
    let mut buf = vec![0u8; 65536];
    let n = m.encode(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// A TLV with its zero padding.
pub fn tlv(ty: u16, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(value.len() + 8);
    v.extend_from_slice(&ty.to_be_bytes());
    v.extend_from_slice(&u16::try_from(4 + value.len()).unwrap().to_be_bytes());
    v.extend_from_slice(value);
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}

/// A message: header (length = 4 + body, padding included as RSPLIB emits it) and body.
pub fn message(ty: u8, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![ty, flags];
    v.extend_from_slice(&u16::try_from(4 + body.len()).unwrap().to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// The 16-bit length field at `at + 2`.
pub fn len_at(msg: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([msg[at + 2], msg[at + 3]]))
}

pub fn set_len_at(msg: &mut [u8], at: usize, len: usize) {
    msg[at + 2..at + 4].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
}

// ---------------------------------------------------------------------------------------------
// TLV walker
// ---------------------------------------------------------------------------------------------

/// ASAP or ENRP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Asap,
    Enrp,
}

/// Bytes before the first parameter of a message: header and fixed fields.
pub fn fixed_prefix(proto: Proto, ty: u8, g: Generation) -> usize {
    let w = id_width(g);
    match (proto, ty) {
        (Proto::Asap, 0x07 | 0x0a) => 4 + w,
        (Proto::Asap, _) => 4,
        (Proto::Enrp, 0x04) => 4 + 2 * w + 4,
        (Proto::Enrp, 0x07..=0x09) => 4 + 3 * w,
        (Proto::Enrp, _) => 4 + 2 * w,
    }
}

/// What a parameter contains after its own fixed fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// Plain bytes.
    Leaf,
    /// Nested parameters after `prefix` fixed bytes.
    Params { prefix: usize },
    /// Error causes (TLV-shaped, but their codes are not parameter types).
    Causes,
}

pub fn content_of(ty: u16, g: Generation) -> Content {
    let w = id_width(g);
    match ty {
        param_type::POOL_ELEMENT => Content::Params { prefix: 2 * w + 4 },
        param_type::SCTP_TRANSPORT..=param_type::UDP_LITE_TRANSPORT => {
            Content::Params { prefix: 4 }
        }
        param_type::DCCP_TRANSPORT => Content::Params { prefix: 8 },
        param_type::SERVER_INFORMATION => Content::Params { prefix: w },
        param_type::OPERATION_ERROR => Content::Causes,
        _ => Content::Leaf,
    }
}

/// One parameter (or error cause) of an encoded message.
#[derive(Clone, Debug)]
pub struct Node {
    /// Offset of its header within the message.
    pub start: usize,
    pub ty: u16,
    /// Its length field.
    pub len: usize,
    /// End of the region that encloses it (parent's `start + len`, or the message length).
    pub region_end: usize,
    /// Whether it is an error cause rather than a parameter.
    pub is_cause: bool,
    pub children: Vec<Node>,
}

impl Node {
    pub fn end(&self) -> usize {
        self.start + self.len
    }
}

/// Parses the parameters in `pos..end` as far as they are well formed (best effort: stops at the
/// first malformed one).
pub fn parse_params(
    msg: &[u8],
    mut pos: usize,
    end: usize,
    g: Generation,
    causes: bool,
) -> Vec<Node> {
    let mut nodes = Vec::new();
    while pos + 4 <= end {
        let ty = u16::from_be_bytes([msg[pos], msg[pos + 1]]);
        let len = len_at(msg, pos);
        if len < 4 || pos + len > end {
            break;
        }
        let children = if causes {
            Vec::new()
        } else {
            match content_of(ty, g) {
                Content::Leaf => Vec::new(),
                Content::Params { prefix } if 4 + prefix <= len => {
                    parse_params(msg, pos + 4 + prefix, pos + len, g, false)
                }
                Content::Params { .. } => Vec::new(),
                Content::Causes => parse_params(msg, pos + 4, pos + len, g, true),
            }
        };
        nodes.push(Node {
            start: pos,
            ty,
            len,
            region_end: end,
            is_cause: causes,
            children,
        });
        pos = (pos + len).next_multiple_of(4);
    }
    nodes
}

/// The top-level parameters of an ASAP or ENRP message (best effort).
pub fn parse_message(msg: &[u8], proto: Proto, g: Generation) -> Vec<Node> {
    if msg.len() < 4 {
        return Vec::new();
    }
    let end = len_at(msg, 0).min(msg.len());
    parse_params(msg, fixed_prefix(proto, msg[0], g), end, g, false)
}

/// Every node of a tree, depth first.
pub fn flatten(nodes: &[Node]) -> Vec<&Node> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(n);
        out.extend(flatten(&n.children));
    }
    out
}

/// A place a parameter can be inserted: the offset and the offsets of the TLVs (and the message
/// header at 0) whose lengths must grow.
#[derive(Clone, Debug)]
pub struct Slot {
    pub at: usize,
    pub enclosing: Vec<usize>,
    /// Type of the innermost enclosing parameter (0 = the message itself).
    pub within: u16,
    /// Whether `at` is the end of its region.
    pub at_end: bool,
}

/// Every position between, before and after parameters, at every nesting level (never inside an
/// Operation Error, whose contents are causes).
pub fn slots(msg: &[u8], proto: Proto, g: Generation) -> Vec<Slot> {
    fn walk(
        nodes: &[Node],
        first: usize,
        enclosing: &[usize],
        within: u16,
        g: Generation,
        out: &mut Vec<Slot>,
    ) {
        let mut at = first;
        for n in nodes {
            out.push(Slot {
                at: n.start,
                enclosing: enclosing.to_vec(),
                within,
                at_end: false,
            });
            if let Content::Params { prefix } = content_of(n.ty, g) {
                let mut inner = enclosing.to_vec();
                inner.push(n.start);
                walk(&n.children, n.start + 4 + prefix, &inner, n.ty, g, out);
            }
            at = n.start + n.len.next_multiple_of(4);
        }
        out.push(Slot {
            at,
            enclosing: enclosing.to_vec(),
            within,
            at_end: true,
        });
    }
    let nodes = parse_message(msg, proto, g);
    let mut out = Vec::new();
    walk(&nodes, fixed_prefix(proto, msg[0], g), &[0], 0, g, &mut out);
    out
}

/// Inserts `param` (a padded TLV) at `slot`, growing the enclosing lengths by its padded size.
/// With `unpadded_last`, the innermost enclosing length grows only by the TLV's own length (the
/// RFC 5354 §2 convention for a last inner parameter); only valid at the end of a region.
pub fn insert(msg: &[u8], slot: &Slot, param: &[u8], unpadded_last: bool) -> Vec<u8> {
    let own = len_at(param, 0);
    let mut out = Vec::with_capacity(msg.len() + param.len());
    out.extend_from_slice(&msg[..slot.at]);
    out.extend_from_slice(param);
    out.extend_from_slice(&msg[slot.at..]);
    let innermost = slot.enclosing.len() - 1;
    for (i, &e) in slot.enclosing.iter().enumerate() {
        let grow = if unpadded_last && i == innermost {
            own
        } else {
            param.len()
        };
        let l = len_at(&out, e);
        // Clamped: mutation tests insert into messages whose lengths are already corrupt.
        set_len_at(&mut out, e, (l + grow).min(0xffff));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Walking decoded messages
// ---------------------------------------------------------------------------------------------

/// Iterates a `Seq`, runs `$body` on every item, and asserts that the iteration yields exactly
/// `len()` items (the validated count) and that the iterator's exact size agrees. Evaluates to
/// the number of items. Allocation-free unless an assertion fails.
macro_rules! each {
    ($seq:expr, |$x:ident| $body:expr) => {{
        let seq = $seq;
        let it = seq.iter();
        assert_eq!(
            it.len(),
            seq.len(),
            "ExactSizeIterator disagrees with Seq::len"
        );
        let mut n = 0usize;
        for $x in it {
            n += 1;
            $body;
        }
        assert_eq!(
            n,
            seq.len(),
            "Seq yielded {} items but validated {}",
            n,
            seq.len()
        );
        n
    }};
}

use std::hint::black_box as bb;

pub fn touch_transport(t: &TransportParam<'_>) -> usize {
    bb(t.kind);
    bb(t.port);
    bb(t.transport_use);
    bb(t.service_code);
    assert!(!t.addresses.is_empty(), "transport without address");
    if t.kind != TransportKind::Sctp {
        assert_eq!(
            t.addresses.len(),
            1,
            "non-SCTP transport with several addresses"
        );
    }
    1 + each!(t.addresses, |a| bb(a))
}

pub fn touch_pe(pe: &PoolElementParam<'_>) -> usize {
    bb(pe.id);
    bb(pe.home_pr);
    bb(pe.registration_life);
    bb(pe.policy);
    bb(pe.policy.policy_type());
    let mut n = 1;
    n += match &pe.user_transport {
        UserTransport::Transport(t) => touch_transport(t),
        UserTransport::Opaque(b) => bb(b.len()).min(1),
    };
    if let Some(t) = &pe.asap_transport {
        n += touch_transport(t);
    }
    n
}

pub fn touch_server(s: &ServerInformation<'_>) -> usize {
    bb(s.server_id);
    1 + touch_transport(&s.transport)
}

pub fn touch_causes(c: &OperationError<'_>) -> usize {
    assert!(!c.is_empty(), "operation error without cause");
    each!(c, |x| {
        bb(x.code);
        bb(x.info);
        bb(x.policy())
    })
}

pub fn touch_pes(pes: &Seq<'_, PoolElementParam<'_>>) -> usize {
    let mut inner = 0;
    inner += each!(pes, |pe| inner += touch_pe(&pe));
    inner
}

/// Visits every field and every item of every list of a decoded ASAP message; returns the number
/// of items visited.
pub fn touch_asap(m: &AsapMessage<'_>) -> usize {
    bb(m.message_type());
    bb(m.flags());
    match m {
        AsapMessage::Registration {
            pool_handle,
            pool_element,
        } => bb(pool_handle.as_bytes()).len().min(1) + touch_pe(pool_element),
        AsapMessage::Deregistration { pool_handle, pe_id }
        | AsapMessage::EndpointKeepAliveAck { pool_handle, pe_id }
        | AsapMessage::EndpointUnreachable { pool_handle, pe_id } => {
            bb(pool_handle);
            bb(pe_id);
            1
        }
        AsapMessage::RegistrationResponse {
            pool_handle,
            pe_id,
            error,
            ..
        }
        | AsapMessage::DeregistrationResponse {
            pool_handle,
            pe_id,
            error,
        } => {
            bb(pool_handle);
            bb(pe_id);
            1 + error.as_ref().map_or(0, touch_causes)
        }
        AsapMessage::HandleResolution {
            pool_handle, items, ..
        } => {
            bb(pool_handle);
            bb(items);
            1
        }
        AsapMessage::HandleResolutionResponse {
            pool_handle,
            resolution,
            ..
        } => {
            bb(pool_handle);
            match resolution {
                Resolution::Found {
                    policy,
                    pool_elements,
                } => {
                    bb(policy);
                    assert!(!pool_elements.is_empty(), "positive resolution without PE");
                    touch_pes(pool_elements)
                }
                Resolution::Failed(e) => touch_causes(e),
            }
        }
        AsapMessage::EndpointKeepAlive {
            server_id,
            pool_handle,
            pe_id,
            ..
        } => {
            bb(server_id);
            bb(pool_handle);
            bb(pe_id);
            1
        }
        AsapMessage::ServerAnnounce {
            server_id,
            transports,
        } => {
            bb(server_id);
            let mut inner = 0;
            inner += each!(transports, |t| inner += touch_transport(&t));
            inner
        }
        AsapMessage::Cookie(c) | AsapMessage::CookieEcho(c) => bb(c.len()).min(1),
        AsapMessage::BusinessCard {
            pool_handle,
            policy,
            pool_elements,
        } => {
            bb(pool_handle);
            bb(policy);
            assert!(!pool_elements.is_empty(), "business card without PE");
            touch_pes(pool_elements)
        }
        AsapMessage::Error(e) => touch_causes(e),
    }
}

/// Visits every field and every item of every list of a decoded ENRP message.
pub fn touch_enrp(m: &EnrpMessage<'_>) -> usize {
    bb(m.sender);
    bb(m.receiver);
    bb(m.body.message_type());
    bb(m.body.flags());
    match &m.body {
        EnrpBody::Presence {
            checksum,
            server_information,
            ..
        } => {
            bb(checksum);
            1 + server_information.as_ref().map_or(0, touch_server)
        }
        EnrpBody::HandleTableRequest { .. } | EnrpBody::ListRequest => 1,
        EnrpBody::HandleTableResponse { entries, .. } => {
            let mut inner = 0;
            inner += each!(entries, |e| {
                bb(e.pool_handle);
                assert!(!e.pool_elements.is_empty(), "pool entry without PE");
                inner += touch_pes(&e.pool_elements)
            });
            inner
        }
        EnrpBody::HandleUpdate {
            action,
            pool_handle,
            pool_element,
            ..
        } => {
            bb(action);
            bb(pool_handle);
            touch_pe(pool_element)
        }
        EnrpBody::ListResponse { servers, .. } => {
            let mut inner = 0;
            inner += each!(servers, |s| inner += touch_server(&s));
            inner
        }
        EnrpBody::InitTakeover { target }
        | EnrpBody::InitTakeoverAck { target }
        | EnrpBody::TakeoverServer { target } => {
            bb(target);
            1
        }
        EnrpBody::Error(e) => touch_causes(e),
    }
}

/// Visits every field and association of a decoded CSP report.
pub fn touch_csp(r: &CspReport<'_>) -> usize {
    bb(r.final_report);
    bb(r.sender_id);
    bb(r.timestamp_us);
    bb(r.report_interval_us);
    bb(r.location);
    bb(r.status);
    bb(r.workload);
    assert!(r.location.len() <= 128 && r.status.len() <= 128);
    1 + each!(r.associations, |a| bb(a))
}

/// Checks what a decode error promises: a non-empty message, ranges inside the message, and
/// cause info that is the whole TLV for "Unrecognized Parameter".
pub fn check_error(e: &DecodeError, msg: &[u8]) {
    assert!(!e.to_string().is_empty(), "empty Display for {e:?}");
    let info = e.cause_info(msg);
    match e {
        DecodeError::UnknownMessageType { .. } => {
            // The whole message without trailing padding: up to its header length.
            let len = if msg.len() >= 4 {
                usize::from(u16::from_be_bytes([msg[2], msg[3]])).min(msg.len())
            } else {
                msg.len()
            };
            assert_eq!(info, &msg[..len]);
        }
        DecodeError::UnrecognizedParameter {
            parameter_type,
            tlv,
            action,
        } => {
            assert!(tlv.end <= msg.len(), "{e:?} points outside the message");
            assert!(!param_type::is_known(*parameter_type), "{e:?}: known type");
            assert_eq!(ParameterAction::of(*parameter_type), *action);
            assert!(
                !action.skips(),
                "{e:?}: skippable parameter stopped decoding"
            );
            assert_eq!(info.len(), tlv.len());
            assert_eq!(&info[..2], &parameter_type.to_be_bytes());
            assert_eq!(
                len_at(info, 0),
                info.len(),
                "cause info is not exactly the TLV"
            );
        }
        DecodeError::UnexpectedParameter { tlv, .. }
        | DecodeError::InvalidValue { tlv, .. }
        | DecodeError::UnsupportedPolicy { tlv, .. } => {
            assert!(
                tlv.start <= tlv.end && tlv.end <= msg.len(),
                "{e:?} points outside"
            );
            assert_eq!(info.len(), tlv.len());
        }
        DecodeError::Truncated { offset, .. } => assert!(*offset <= msg.len(), "{e:?}"),
        DecodeError::BadLength { offset, .. } => assert!(*offset < msg.len().max(1), "{e:?}"),
        DecodeError::MissingParameter { .. } => {}
    }
    match e.reply_cause() {
        Some(cause::UNRECOGNIZED_MESSAGE) | Some(cause::INVALID_VALUES) | None => {}
        Some(cause::UNRECOGNIZED_PARAMETER) => assert!(!info.is_empty()),
        Some(other) => panic!("unexpected reply cause {other:#x} for {e:?}"),
    }
}

/// Checks the parameters skipped under the `11` rule: each range is a whole TLV of an unknown
/// type with upper bits `11`.
pub fn check_unrecognized(u: &Unrecognized, msg: &[u8]) {
    for r in u.ranges() {
        assert!(r.end <= msg.len() && r.len() >= 4, "bad range {r:?}");
        let ty = u16::from_be_bytes([msg[r.start], msg[r.start + 1]]);
        assert_eq!(
            ty >> 14,
            0b11,
            "reported parameter {ty:#06x} is not of class 11"
        );
        assert!(!param_type::is_known(ty));
        assert_eq!(len_at(msg, r.start), r.len());
    }
}

/// Decodes `msg` as ASAP; if that succeeds, walks every list, re-encodes, decodes the result to
/// an equal message, and re-encodes that to identical bytes. Returns whether `msg` decoded.
pub fn deep_check_asap(msg: &[u8], g: Generation) -> bool {
    let d = match AsapMessage::decode(msg, g) {
        Ok(d) => d,
        Err(e) => {
            check_error(&e, msg);
            return false;
        }
    };
    touch_asap(&d.message);
    check_unrecognized(&d.unrecognized, msg);
    let re = encode_asap(&d.message, g)
        .unwrap_or_else(|e| panic!("{:?} decoded but does not re-encode: {e:?}", d.message));
    let again = AsapMessage::decode(&re, g)
        .unwrap_or_else(|e| panic!("re-encoding of {:?} does not decode: {e:?}", d.message));
    assert_eq!(again.message, d.message, "re-encoding changed the message");
    assert!(again.unrecognized.is_empty());
    assert_eq!(
        encode_asap(&again.message, g).unwrap(),
        re,
        "not a fixpoint"
    );
    true
}

/// As [`deep_check_asap`], for ENRP.
pub fn deep_check_enrp(msg: &[u8], g: Generation) -> bool {
    let d = match EnrpMessage::decode(msg, g) {
        Ok(d) => d,
        Err(e) => {
            check_error(&e, msg);
            return false;
        }
    };
    touch_enrp(&d.message);
    check_unrecognized(&d.unrecognized, msg);
    let re = encode_enrp(&d.message, g)
        .unwrap_or_else(|e| panic!("{:?} decoded but does not re-encode: {e:?}", d.message));
    let again = EnrpMessage::decode(&re, g)
        .unwrap_or_else(|e| panic!("re-encoding of {:?} does not decode: {e:?}", d.message));
    assert_eq!(again.message, d.message, "re-encoding changed the message");
    assert!(again.unrecognized.is_empty());
    assert_eq!(
        encode_enrp(&again.message, g).unwrap(),
        re,
        "not a fixpoint"
    );
    true
}

/// As [`deep_check_asap`], for CSP: a report re-encodes to a report that differs at most by
/// texts cut to 127 bytes (the encoder keeps a terminating NUL).
pub fn deep_check_csp(msg: &[u8]) -> bool {
    let r = match CspReport::decode(msg) {
        Ok(r) => r,
        Err(e) => {
            check_error(&e, msg);
            return false;
        }
    };
    touch_csp(&r);
    let re = encode_csp(&r).unwrap_or_else(|e| panic!("{r:?} does not re-encode: {e:?}"));
    let again = CspReport::decode(&re).unwrap_or_else(|e| panic!("{r:?} re-encoded: {e:?}"));
    let cut = |t: &[u8]| -> Vec<u8> {
        let mut v = t[..t.len().min(127)].to_vec();
        while v.last() == Some(&0) {
            v.pop();
        }
        v
    };
    assert_eq!(again.location, &cut(r.location)[..]);
    assert_eq!(again.status, &cut(r.status)[..]);
    assert_eq!(
        CspReport {
            location: r.location,
            status: r.status,
            ..again
        },
        r
    );
    if r.location.len() < 128 && r.status.len() < 128 && msg[1] & !csp::CSP_FLAG_FINAL == 0 {
        assert_eq!(
            re, msg,
            "canonical CSP report did not re-encode byte-exactly"
        );
    }
    true
}
