//! The invariants of the operating scope, each a named function that returns what is wrong, and
//! the ledger of every PE's life they are judged against. The cheap ones run after every step;
//! the convergence ones at the end of each quiet phase (`Fault::Settle`).

use std::collections::{BTreeMap, BTreeSet};

use rserpool_handlespace::{Millis, OwnerChecksums, PeId, PrId};
use rserpool_registrar::core::cluster::Cluster;

/// Registration life of every PE (ms).
pub const REGISTRATION_LIFE: Millis = 6_000;

/// How long after a PE went away a PR may still hold it, and a resolution return it.
///
/// RFC 5353 lets PRs that do not own a PE keep it until its registration life runs out when
/// they miss the DEL_PE (a partition, a crashed home PR): that is one [`REGISTRATION_LIFE`].
/// A second one, by design: a handle table entry carries the registration life, not what is
/// left of it, so a copy made by a transfer lives a full life from the transfer. Seed 10201: a
/// PE died while its home PR was cut off; the PR on the other side had taken the home PR over
/// and still held the PE (its life not yet run out) when the partition healed, the audit repair
/// handed it back to the old home PR as a fresh entry, and that copy lived 9.3 s after the PE
/// died. On top: the home PR notices a dead PE's association only when the association breaks
/// (at most 2 s for a partition in this simulation), and messages take up to 0.7 s (delay spike
/// plus slow PR); 3 s covers both.
pub const STALE_BOUND: Millis = 2 * REGISTRATION_LIFE + 3_000;

/// One PE's life as the simulation caused it.
#[derive(Clone, Debug)]
pub struct PeRecord {
    /// Its pool handle.
    pub pool: Vec<u8>,
    /// When it was started (it may be registered from then on).
    pub started: Millis,
    /// When it deregistered, died or gave up.
    pub gone: Option<Millis>,
}

/// Every PE ever started, by PE ID.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// The records.
    pub pes: BTreeMap<PeId, PeRecord>,
}

impl Ledger {
    /// Whether a PR may hold (or a resolution return) PE `id` of `pool` at `now`: it was started
    /// in that pool, and went away at most [`STALE_BOUND`] ago.
    fn admissible(&self, pool: &[u8], id: PeId, now: Millis) -> Result<(), String> {
        let Some(r) = self.pes.get(&id) else {
            return Err(format!("PE {id} was never registered"));
        };
        if r.pool != pool {
            return Err(format!(
                "PE {id} is in pool {} but registered in {}",
                String::from_utf8_lossy(pool),
                String::from_utf8_lossy(&r.pool)
            ));
        }
        match r.gone {
            Some(gone) if now.saturating_sub(gone) > STALE_BOUND => Err(format!(
                "PE {id} went away at {gone} ms, {} ms ago (bound {STALE_BOUND} ms)",
                now - gone
            )),
            _ => Ok(()),
        }
    }
}

/// A PR's PEs: (pool handle, PE ID) -> home PR.
pub type Entries = BTreeMap<(Vec<u8>, PeId), PrId>;

/// A live PR as the invariants see it.
pub struct PrView<'a> {
    /// Its index.
    pub index: usize,
    /// Its current PR ID.
    pub id: PrId,
    /// Its state machine.
    pub cluster: &'a Cluster,
}

impl PrView<'_> {
    /// Every PE it holds: (pool handle, PE ID) -> home PR.
    pub fn entries(&self) -> Entries {
        let mut all = BTreeMap::new();
        for w in self.cluster.workers() {
            for (handle, snapshot) in w.shard().pools() {
                for e in snapshot.entries() {
                    all.insert((handle.to_vec(), e.id()), e.home_pr);
                }
            }
        }
        all
    }

    /// Its per-owner audit checksums, summed over the shards.
    pub fn checksums(&self) -> BTreeMap<PrId, OwnerChecksums> {
        let mut sums: BTreeMap<PrId, OwnerChecksums> = BTreeMap::new();
        for w in self.cluster.workers() {
            for (owner, c) in w.shard().owner_checksums() {
                sums.entry(owner).or_default().merge(&c);
            }
        }
        sums
    }
}

/// A PE the simulation considers registered: started, not gone, and told by a PR that it is
/// registered there.
pub struct RegisteredPe {
    /// Its ID.
    pub id: PeId,
    /// Its pool handle.
    pub pool: Vec<u8>,
    /// Its index among the simulation's PEs.
    pub index: usize,
    /// The index of the PR it is registered at.
    pub registrar: usize,
}

/// **Resolutions return only registered PEs**: every PE a handle resolution returns was
/// registered in that pool, and if it went away, at most [`STALE_BOUND`] ago. Checked on every
/// resolution a PU receives.
pub fn resolution_returns_only_registered_pes(
    ledger: &Ledger,
    pool: &[u8],
    returned: &[PeId],
    now: Millis,
) -> Result<(), String> {
    for &id in returned {
        ledger.admissible(pool, id, now)?;
    }
    Ok(())
}

/// **No PR holds a phantom or long-gone PE**: every PE in every live PR's handlespace was
/// registered in that pool, and if it went away, at most [`STALE_BOUND`] ago. Checked after every
/// step (it implies the resolution invariant for every resolution any PR could answer).
pub fn handlespaces_hold_only_registered_pes(
    ledger: &Ledger,
    prs: &[PrView<'_>],
    now: Millis,
) -> Result<(), String> {
    for pr in prs {
        for w in pr.cluster.workers() {
            for (handle, snapshot) in w.shard().pools() {
                for e in snapshot.entries() {
                    ledger
                        .admissible(handle, e.id(), now)
                        .map_err(|why| format!("PR {} ({}): {why}", pr.index, pr.id))?;
                }
            }
        }
    }
    Ok(())
}

/// **No PE is lost while its home PR lives**: a PE registered at a live PR over an intact
/// association (`intact`: not broken, not closed at either end; asked only when the PR does not
/// hold the PE as its own) is in that PR's handlespace with that PR as its home. Checked after
/// every step.
pub fn registrars_hold_their_pes(
    pes: &[RegisteredPe],
    prs: &[PrView<'_>],
    intact: impl Fn(&RegisteredPe) -> bool,
) -> Result<(), String> {
    for pe in pes {
        let Some(pr) = prs.iter().find(|p| p.index == pe.registrar) else {
            continue;
        };
        let entry = pr
            .cluster
            .workers()
            .iter()
            .find_map(|w| w.shard().entry(&pe.pool, pe.id).map(|e| e.home_pr));
        match entry {
            Some(home) if home == pr.id => {}
            _ if !intact(pe) => {}
            Some(home) => {
                return Err(format!(
                    "PE {} is registered at PR {} ({}), which holds it with home PR {home}",
                    pe.id, pr.index, pr.id
                ));
            }
            None => {
                return Err(format!(
                    "PE {} is registered at PR {} ({}), which lost it",
                    pe.id, pr.index, pr.id
                ));
            }
        }
    }
    Ok(())
}

/// **The scope formed** (settle): every PR is up, finished its start-up, and knows exactly the
/// current IDs of all the others as peers (no dead incarnation left).
pub fn scope_formed(prs: &[PrView<'_>], total: usize) -> Result<(), String> {
    if prs.len() != total {
        return Err(format!("{} of {total} PRs are up", prs.len()));
    }
    for pr in prs {
        let w0 = &pr.cluster.workers()[0];
        if !w0.enrp_live() {
            return Err(format!("PR {} ({}) is still starting", pr.index, pr.id));
        }
        let known: BTreeSet<PrId> = w0.enrp_peers().into_iter().collect();
        let expected: BTreeSet<PrId> = prs
            .iter()
            .filter(|p| p.index != pr.index)
            .map(|p| p.id)
            .collect();
        if known != expected {
            return Err(format!(
                "PR {} ({}) knows peers {known:?}, expected {expected:?}",
                pr.index, pr.id
            ));
        }
    }
    Ok(())
}

/// **Every live PE is resolvable at every PR** (settle): every PE that has not gone away is
/// registered, and every PR holds it with the PR it is registered at as its home.
pub fn live_pes_resolvable_everywhere(
    ledger: &Ledger,
    registered: &[RegisteredPe],
    prs: &[PrView<'_>],
) -> Result<(), String> {
    for (id, r) in ledger.pes.iter().filter(|(_, r)| r.gone.is_none()) {
        let Some(pe) = registered.iter().find(|p| p.id == *id) else {
            return Err(format!("PE {id} is not registered after the quiet phase"));
        };
        let Some(home) = prs.iter().find(|p| p.index == pe.registrar) else {
            return Err(format!("PE {id} is registered at a PR that is down"));
        };
        for pr in prs {
            let entry = pr
                .cluster
                .workers()
                .iter()
                .find_map(|w| w.shard().entry(&r.pool, *id).map(|e| e.home_pr));
            if entry != Some(home.id) {
                return Err(format!(
                    "PE {id} (registered at PR {} ({})) is at PR {} ({}) with home {entry:?}",
                    home.index, home.id, pr.index, pr.id
                ));
            }
        }
    }
    Ok(())
}

/// **The PRs converge** (settle): all hold the same PEs with the same home PRs, and compute the
/// same per-owner audit checksums (Internet-16 and NG) from them.
pub fn handlespaces_converge(prs: &[PrView<'_>]) -> Result<(), String> {
    let Some((first, rest)) = prs.split_first() else {
        return Ok(());
    };
    let entries = first.entries();
    let sums = first.checksums();
    for pr in rest {
        let other = pr.entries();
        if other != entries {
            let only_first: Vec<_> = entries
                .iter()
                .filter(|e| !other.contains_key(e.0))
                .collect();
            let only_other: Vec<_> = other
                .iter()
                .filter(|e| !entries.contains_key(e.0))
                .collect();
            return Err(format!(
                "PR {} ({}) and PR {} ({}) differ: only in the first {only_first:?}, only in the \
                 second {only_other:?}, or in home PRs",
                first.index, first.id, pr.index, pr.id
            ));
        }
        if pr.checksums() != sums {
            return Err(format!(
                "PR {} ({}) and PR {} ({}) hold the same PEs but compute different checksums",
                first.index, first.id, pr.index, pr.id
            ));
        }
    }
    Ok(())
}
