//! Model-based test: random sequences of registrations, re-registrations, deregistrations,
//! expiries, resolutions, unreachable reports and takeovers run against the handlespace and
//! against a naive reference model; after every step the PEs, owners, pools and audit checksums
//! must agree, and every refusal must carry the cause the model predicts.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use rserpool_handlespace::Rng;
use rserpool_handlespace::*;
use rserpool_protocol::checksum::{Internet16, NgDigest};
use rserpool_protocol::{Policy, TransportKind, cause};

/// Short handles, long ones, and the two lengths around the read side's inline key limit (22).
const HANDLES: [&[u8]; 7] = [
    b"EchoPool",
    b"Download",
    b"P",
    b"a-pool-handle-of-32-bytes-long!!",
    b"x",
    b"twenty-two-bytes-long!",
    b"twenty-three-bytes-long",
];
const MAX_REPORTS: u32 = 3;

#[derive(Clone, Debug)]
enum Op {
    Register {
        handle: usize,
        id: u64,
        policy: usize,
        shape: usize,
        life: i32,
        home: u64,
        association: Option<u64>,
    },
    Deregister {
        handle: usize,
        id: u64,
        association: Option<u64>,
    },
    Advance(u64),
    Resolve {
        handle: usize,
        n: usize,
    },
    Refresh {
        handle: usize,
        id: u64,
    },
    Unreachable {
        handle: usize,
        id: u64,
    },
    TakeOver {
        dead: u64,
        new_home: u64,
    },
    /// Several operations (no resolutions) in one batch of every shard.
    Batch(Vec<Op>),
}

fn policy(i: usize, load: u32) -> Policy {
    match i {
        0 => Policy::RoundRobin,
        1 => Policy::WeightedRandom { weight: load % 5 },
        2 => Policy::LeastUsed { load },
        3 => Policy::LeastUsedDegradation {
            load,
            load_degradation: 7,
        },
        _ => Policy::Priority { priority: load % 3 },
    }
}

fn user_transport(shape: usize, id: u64) -> OwnedUserTransport {
    let (kind, transport_use) = match shape {
        0 => (TransportKind::Sctp, 0),
        1 => (TransportKind::Sctp, 1),
        _ => (TransportKind::Tcp, 0),
    };
    OwnedUserTransport::Transport(OwnedTransport {
        kind,
        port: 1000 + (id % 1000) as u16,
        transport_use,
        service_code: 0,
        addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, (id % 250) as u8))].into(),
    })
}

/// The host an association comes from: associations 1 and 3 share one, 2 is another.
fn host(association: u64) -> u8 {
    (association % 2) as u8
}

/// The ASAP transport the registrar records for a PE registering over `association`.
fn asap_transport(association: u64) -> OwnedTransport {
    OwnedTransport {
        kind: TransportKind::Sctp,
        port: 4000 + association as u16,
        transport_use: 0,
        service_code: 0,
        addresses: vec![IpAddr::V4(Ipv4Addr::new(198, 51, 100, host(association)))].into(),
    }
}

/// An operation, or now and then a batch of up to 12 (see [`Op::Batch`]).
fn op(max_id: u64, handles: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        9 => single_op(max_id, handles),
        1 => prop::collection::vec(single_op(max_id, handles), 1..12).prop_map(|ops| {
            Op::Batch(
                ops.into_iter()
                    .filter(|op| !matches!(op, Op::Resolve { .. }))
                    .collect(),
            )
        }),
    ]
}

fn single_op(max_id: u64, handles: usize) -> impl Strategy<Value = Op> {
    let handle = 0..handles;
    // Mostly small IDs so that operations collide; sometimes 0 (invalid) or a 64-bit one.
    let id = prop_oneof![8 => 1u64..max_id, 1 => Just(0u64), 1 => Just(0x1_0000_0001u64)];
    let association = prop_oneof![2 => Just(None), 3 => (1u64..4).prop_map(Some)];
    prop_oneof![
        // Usually the pool's own policy and transport (so pools grow), sometimes another one.
        6 => (handle.clone(), id.clone(), prop_oneof![3 => Just(None), 1 => (0..5usize, 0..3usize).prop_map(Some)],
              prop_oneof![1 => Just(-1i32), 4 => 1i32..20_000], 1u64..5, association.clone())
            .prop_map(|(handle, id, other, life, home, association)| {
                let (policy, shape) = other.unwrap_or((handle % 5, handle % 3));
                Op::Register { handle, id, policy, shape, life, home, association }
            }),
        2 => (handle.clone(), id.clone(), association).prop_map(|(handle, id, association)| {
            Op::Deregister { handle, id, association }
        }),
        2 => (0u64..6_000).prop_map(Op::Advance),
        3 => (handle.clone(), 0usize..6).prop_map(|(handle, n)| Op::Resolve { handle, n }),
        1 => (handle.clone(), id.clone()).prop_map(|(handle, id)| Op::Refresh { handle, id }),
        1 => (handle, id).prop_map(|(handle, id)| Op::Unreachable { handle, id }),
        1 => (1u64..5, 1u64..6).prop_map(|(dead, new_home)| Op::TakeOver { dead, new_home }),
    ]
}

/// The reference model: plain maps, recomputed checksums.
#[derive(Clone, Debug)]
struct ModelPe {
    registration: PeRegistration,
    home: u64,
    association: Option<u64>,
    deadline: Option<u64>,
    reports: u32,
}

#[derive(Default)]
struct Model {
    pools: BTreeMap<Vec<u8>, BTreeMap<u64, ModelPe>>,
    now: u64,
}

impl Model {
    /// RFC 5352 §3.1 as the model understands it; returns the refusal cause, if any.
    fn register(
        &mut self,
        handle: &[u8],
        r: PeRegistration,
        home: u64,
        association: Option<u64>,
    ) -> Result<(), u16> {
        if r.id.0 == 0 {
            return Err(cause::INVALID_VALUES);
        }
        if let Some(pool) = self.pools.get(handle) {
            // The pool's fixed properties are those of the first PE that created it; every PE
            // agrees with them, so any member shows them.
            let any = &pool.values().next().unwrap().registration;
            if any.policy.policy_type() != r.policy.policy_type() {
                return Err(cause::INCONSISTENT_POLICY);
            }
            let (a, b) = (any.user_transport.shape(), r.user_transport.shape());
            if a.parameter_type != b.parameter_type {
                return Err(cause::INCONSISTENT_TRANSPORT);
            }
            if a.transport_use != b.transport_use {
                return Err(cause::INCONSISTENT_DATA_CONTROL);
            }
            if let Some(pe) = pool.get(&r.id.0)
                && let (Some(owner), Some(asking)) = (pe.association, association)
                && owner != asking
                && (host(owner) != host(asking) || asking < owner)
            {
                return Err(cause::REJECTED_SECURITY);
            }
        }
        let deadline = u64::try_from(r.registration_life)
            .ok()
            .map(|l| self.now + l);
        self.pools.entry(handle.to_vec()).or_default().insert(
            r.id.0,
            ModelPe {
                registration: r,
                home,
                association,
                deadline,
                reports: 0,
            },
        );
        Ok(())
    }

    fn remove(&mut self, handle: &[u8], id: u64) -> bool {
        let Some(pool) = self.pools.get_mut(handle) else {
            return false;
        };
        let found = pool.remove(&id).is_some();
        if pool.is_empty() {
            self.pools.remove(handle);
        }
        found
    }

    fn checksums(&self, owner: u64) -> (u16, u64, u64) {
        let mut i16 = Internet16::new();
        let mut ng = NgDigest::new();
        let mut n = 0;
        for (h, pool) in &self.pools {
            for (&id, pe) in pool {
                if pe.home == owner {
                    if let Ok(narrow) = u32::try_from(id) {
                        i16.add(h, narrow);
                    }
                    ng.add(h, id);
                    n += 1;
                }
            }
        }
        (i16.value(), ng.value(), n)
    }
}

fn check_same(hs: &Handlespace, model: &Model, step: usize) {
    assert_eq!(
        hs.pool_count(),
        model.pools.len(),
        "step {step}: pool count"
    );
    let total: usize = model.pools.values().map(BTreeMap::len).sum();
    assert_eq!(hs.pe_count(), total, "step {step}: PE count");
    for (h, pool) in &model.pools {
        // What readers on other threads see: the published snapshot.
        let snap = hs
            .reader()
            .snapshot(h)
            .unwrap_or_else(|| panic!("step {step}: pool {h:?} not published"));
        let mut got: Vec<_> = snap
            .entries()
            .map(|e| {
                (
                    e.id().0,
                    e.home_pr.0,
                    e.association.map(AssociationId::get),
                    e.registration.clone(),
                )
            })
            .collect();
        got.sort_by_key(|g| g.0);
        let want: Vec<_> = pool
            .iter()
            .map(|(&id, pe)| (id, pe.home, pe.association, pe.registration.clone()))
            .collect();
        assert_eq!(got, want, "step {step}: pool {h:?}");
    }
    for owner in 1..6 {
        let c = hs.checksums(PrId(owner));
        let (i16, ng, n) = model.checksums(owner);
        assert_eq!(
            (c.internet16.value(), c.ng.value(), c.pes),
            (i16, ng, n),
            "step {step}: checksums of owner {owner}"
        );
    }
}

fn run(ops: &[Op], shards: usize, seed: u64) {
    let mut hs = Handlespace::new(shards, Limits::default());
    let mut model = Model::default();
    let mut rng = Rng::seed(seed);
    for (step, op) in ops.iter().enumerate() {
        apply(&mut hs, &mut model, &mut rng, op, step);
        check_same(&hs, &model, step);
    }
}

/// Applies `op` to the handlespace and the model, checking its outcome.
fn apply(hs: &mut Handlespace, model: &mut Model, rng: &mut Rng, op: &Op, step: usize) {
    {
        match *op {
            Op::Register {
                handle,
                id,
                policy: p,
                shape,
                life,
                home,
                association,
            } => {
                let r = PeRegistration {
                    id: PeId(id),
                    registration_life: life,
                    user_transport: user_transport(shape, id),
                    policy: policy(p, (id as u32).wrapping_mul(2_654_435_761)),
                    asap_transport: association.map(asap_transport),
                };
                let h = HANDLES[handle];
                let got = hs
                    .register(
                        h,
                        r.clone(),
                        PrId(home),
                        association.and_then(AssociationId::new),
                        model.now,
                    )
                    .map(|_| ())
                    .map_err(|e| e.cause());
                let want = model.register(h, r, home, association);
                assert_eq!(got, want, "step {step}: {op:?}");
            }
            Op::Deregister {
                handle,
                id,
                association,
            } => {
                let h = HANDLES[handle];
                let got = hs.deregister(h, PeId(id), association.and_then(AssociationId::new));
                let owner = model
                    .pools
                    .get(h)
                    .and_then(|p| p.get(&id))
                    .and_then(|pe| pe.association);
                match (owner, association) {
                    (Some(o), Some(a)) if o != a => {
                        assert_eq!(
                            got.map(|_| ()).map_err(|e| e.cause()),
                            Err(cause::REJECTED_SECURITY),
                            "step {step}"
                        )
                    }
                    _ => {
                        let found = model.remove(h, id);
                        let removed = got.unwrap_or_else(|e| panic!("step {step}: {e}"));
                        assert_eq!(removed.is_some(), found, "step {step}: {op:?}");
                    }
                }
            }
            Op::Advance(ms) => {
                model.now += ms;
                let mut got: Vec<_> = hs
                    .expire(model.now)
                    .into_iter()
                    .map(|r| (r.pool_handle.to_vec(), r.entry.id().0))
                    .collect();
                got.sort();
                let mut want = Vec::new();
                for (h, pool) in &model.pools {
                    for (&id, pe) in pool {
                        if pe.deadline.is_some_and(|d| d <= model.now) {
                            want.push((h.clone(), id));
                        }
                    }
                }
                for (h, id) in &want {
                    model.remove(h, *id);
                }
                assert_eq!(got, want, "step {step}: expired at {}", model.now);
            }
            Op::Resolve { handle, n } => {
                let h = HANDLES[handle];
                let mut out = vec![0u32; n];
                let got = hs.resolve(h, rng, &mut out, |snap, picked| {
                    picked
                        .iter()
                        .map(|&i| snap.entry(i as usize).id().0)
                        .collect::<Vec<u64>>()
                });
                match model.pools.get(h) {
                    None => assert!(got.is_none(), "step {step}: resolved unknown pool"),
                    Some(pool) => {
                        let mut ids = got.unwrap_or_else(|| panic!("step {step}: pool not found"));
                        let k = ids.len();
                        // Weighted random may leave out weight-0 PEs; every other policy fills.
                        let selectable = pool
                            .values()
                            .filter(|pe| {
                                !matches!(
                                    pe.registration.policy,
                                    Policy::WeightedRandom { weight: 0 }
                                )
                            })
                            .count();
                        assert_eq!(k, n.min(selectable), "step {step}: {op:?}");
                        ids.sort();
                        ids.dedup();
                        assert_eq!(ids.len(), k, "step {step}: duplicate PE in a resolution");
                        assert!(
                            ids.iter().all(|id| pool.contains_key(id)),
                            "step {step}: foreign PE"
                        );
                    }
                }
            }
            Op::Refresh { handle, id } => {
                let h = HANDLES[handle];
                let known = model.pools.get_mut(h).and_then(|p| p.get_mut(&id));
                let want = known.is_some();
                if let Some(pe) = known {
                    pe.reports = 0;
                }
                assert_eq!(hs.shard_mut(h).refresh(h, PeId(id)), want, "step {step}");
            }
            Op::Unreachable { handle, id } => {
                let h = HANDLES[handle];
                let removed = hs.shard_mut(h).report_unreachable(h, PeId(id), MAX_REPORTS);
                let mut want = false;
                if let Some(pe) = model.pools.get_mut(h).and_then(|p| p.get_mut(&id)) {
                    pe.reports += 1;
                    if pe.reports >= MAX_REPORTS {
                        want = true;
                    }
                }
                if want {
                    model.remove(h, id);
                }
                assert_eq!(removed.is_some(), want, "step {step}: {op:?}");
            }
            Op::TakeOver { dead, new_home } => {
                let moved = hs.take_over(PrId(dead), PrId(new_home)).len();
                let mut want = 0;
                if dead != new_home {
                    for pool in model.pools.values_mut() {
                        for pe in pool.values_mut() {
                            if pe.home == dead {
                                pe.home = new_home;
                                want += 1;
                            }
                        }
                    }
                }
                assert_eq!(moved, want, "step {step}: {op:?}");
            }
            // Readers see a batch's changes at its end: resolutions are left out of batches.
            Op::Batch(ref ops) => hs.batch(|hs| {
                for op in ops {
                    apply(hs, model, rng, op, step);
                }
            }),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn handlespace_agrees_with_the_model(ops in prop::collection::vec(op(12, HANDLES.len()), 1..80), shards in 1usize..4, seed: u64) {
        run(&ops, shards, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Pools grow past one tree leaf (16 PEs): splits, merges and a root of inner nodes.
    #[test]
    fn large_pools_agree_with_the_model(ops in prop::collection::vec(op(48, 2), 100..400), shards in 1usize..3, seed: u64) {
        run(&ops, shards, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Pools of hundreds of PEs: trees of three levels (more than 16 × 16 PEs), grown and shrunk
    /// by batches.
    #[test]
    fn deep_pools_agree_with_the_model(ops in prop::collection::vec(op(600, 1), 1500..2500), seed: u64) {
        run(&ops, 1, seed);
    }
}
