//! The invariants of the operating scope, each a named function that returns what is wrong, the
//! ledger of every PE's life they are judged against, and the PR timers the simulation
//! configures with the liveness bounds derived from them. The cheap ones run after every step;
//! the liveness ones at their deadline after the fault that started them; the convergence ones,
//! subscribers' views included, at the end of each quiet phase (`Fault::Settle`).

use std::collections::{BTreeMap, BTreeSet};

use rserpool_handlespace::{Millis, OwnerChecksums, PeId, PrId};
use rserpool_registrar::core::in_memory::InMemoryPr;

/// Registration life of every PE (ms).
pub const REGISTRATION_LIFE: Millis = 6_000;

/// PEER-HEARTBEAT-CYCLE of every PR (RFC 5353 §4), jittered by the core to 7/8..9/8 of it.
pub const HEARTBEAT_INTERVAL: Millis = 500;
/// MAX-TIME-LAST-HEARD (RFC 5353 §4): silence before a peer is probed.
pub const MAX_TIME_LAST_HEARD: Millis = 1_000;
/// MAX-TIME-NO-RESPONSE (RFC 5353 §4): an unanswered probe's wait before the peer is dead.
pub const MAX_TIME_NO_RESPONSE: Millis = 1_000;
/// MENTOR-DISCOVERY-TIMEOUT (RFC 5353 §3.2.2): a starting PR's wait for a mentor's transfer.
pub const MENTOR_DISCOVERY_TIMEOUT: Millis = 2_000;
/// How long a takeover waits for every acknowledgement (RFC 5353 §3.5.1). Longer than the worst
/// round trip of the fault model (2 × [`MAX_ONE_WAY`] plus mailbox hops, 1.45 s): with RSPLIB's
/// rule that an unacknowledged takeover is dropped, a shorter expiry drops takeovers whose
/// acknowledgement is only late, and their PEs keep a dead home PR until they re-register.
pub const TAKEOVER_EXPIRY: Millis = 2_000;
/// Gap between connection attempts to a static peer.
pub const RECONNECT_INTERVAL: Millis = 500;
/// The scope's housekeeping tick: a quarter of the shortest of the heartbeat, MAX-TIME-LAST-HEARD
/// and MAX-TIME-NO-RESPONSE, as the core computes it (`EnrpConfig::tick`).
pub const ENRP_TICK: Millis = HEARTBEAT_INTERVAL / 4;
/// Longest one-way delay of a message without a delay fault (1-5 ms).
pub const BASE_DELAY: Millis = 5;
/// Longest extra one-way delay of the fault model: a delay spike (< 400 ms) plus a slow PR
/// (< 300 ms).
pub const MAX_EXTRA_DELAY: Millis = 700;
/// Longest one-way delay of the fault model.
pub const MAX_ONE_WAY: Millis = BASE_DELAY + MAX_EXTRA_DELAY;
/// Longest stay of a forward in a worker mailbox (asynchronous mailboxes: 0-2 ms per hop).
pub const MAILBOX_DELAY: Millis = 2;
/// Longest gap between two heartbeats of one PR (the interval plus its jitter).
const HEARTBEAT_GAP: Millis = HEARTBEAT_INTERVAL + HEARTBEAT_INTERVAL / 8;
/// Mailbox hops on the path of one ENRP exchange: a checksum round (query, reply), the shard
/// hops of a write (request, completion, replication) and the receiver's hop to its shard,
/// with room for one more round queued behind a running one.
const MAILBOX_HOPS: Millis = 8;

/// How long after PR `X` died, vanished or froze the live PRs hold none of `X`'s PEs with `X`
/// as home PR any more (each moved to its taker, or re-registered elsewhere), given the most
/// extra one-way delay `extra` of the delay faults meanwhile. With `d` = [`BASE_DELAY`] +
/// `extra`:
/// - a peer last heard `X` at most `d` after the fault (a presence in flight);
/// - it probes `X` at its first tick [`MAX_TIME_LAST_HEARD`] after that (one [`ENRP_TICK`] late
///   at most), and declares it dead at its first tick [`MAX_TIME_NO_RESPONSE`] after the probe
///   (a RST only starts the probe earlier);
/// - a checksum round tells whether `X` owns PEs there; ENRP_INIT_TAKEOVER, its acknowledgement
///   and ENRP_TAKEOVER_SERVER take `3d`, each behind mailbox hops;
/// - plus one heartbeat gap ([`HEARTBEAT_INTERVAL`] jittered), as RFC 5353 §3.5 counts it.
///
/// Without delay faults: 1000 + 1000 + 562 + 250 + 20 + 16 = 2848 ms.
pub fn takeover_bound(extra: Millis) -> Millis {
    let d = BASE_DELAY + extra;
    MAX_TIME_LAST_HEARD
        + MAX_TIME_NO_RESPONSE
        + HEARTBEAT_GAP
        + 2 * ENRP_TICK
        + 4 * d
        + 2 * MAILBOX_HOPS * MAILBOX_DELAY
}

/// How long after its restart a PR holds every PE registered elsewhere (RFC 5353 §3.2), given
/// `pages` handle table pages for the whole handlespace and the most extra one-way delay `extra`
/// meanwhile. The PR connects to its peers at its first tick, hears a presence, and asks the
/// first peer heard (its mentor) for the handlespace, a page per round trip; if no mentor
/// finishes, it serves alone after [`MENTOR_DISCOVERY_TIMEOUT`] and each peer's next presence
/// (one heartbeat gap) starts an audit repair of that peer's PEs, again a page per round trip.
/// So: the timeout, a heartbeat gap, two ticks, and `pages` + 4 round trips (connection,
/// presence and its reply, the request before the first page), each round trip `2d` plus
/// mailbox hops. Without delay faults and 10 pages: 2000 + 562 + 250 + 14 × 26 = 3176 ms.
pub fn startup_bound(extra: Millis, pages: u64) -> Millis {
    let d = BASE_DELAY + extra;
    let round_trip = 2 * d + MAILBOX_HOPS * MAILBOX_DELAY;
    MENTOR_DISCOVERY_TIMEOUT + HEARTBEAT_GAP + 2 * ENRP_TICK + (pages + 4) * round_trip
}

/// How long a registration must have lasted before a restarted PR is expected to hold the PE
/// too: its ENRP_HANDLE_UPDATE reaching every peer (one delay behind mailbox hops).
pub fn replication_bound(extra: Millis) -> Millis {
    BASE_DELAY + extra + MAILBOX_HOPS * MAILBOX_DELAY
}

/// How long after a PE decided to deregister no PR holds it any more, when the scope is whole
/// (every PR up, live and knowing the others): a re-registration still in flight is answered
/// first (a PE has one request outstanding at a time: `2d`), then the deregistration reaches
/// its PR (`d`), the shard removes it and hands the DEL_PE to worker 0, which sends it to every
/// peer (`d`), whose worker 0 forwards it to the pool's shard: `4d` plus the mailbox hops.
/// Without delay faults: 36 ms. Seed 81: a PE left 17 ms after sending a re-registration
/// during a 231 ms delay spike, and sent its deregistration 312 ms later.
pub fn deregistration_bound(extra: Millis) -> Millis {
    4 * (BASE_DELAY + extra) + MAILBOX_HOPS * MAILBOX_DELAY
}

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
    pub cluster: &'a InMemoryPr,
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
    /// Since when it has been registered at that PR without a break.
    pub since: Millis,
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

/// **A restarted PR resolves every live PE** (at [`startup_bound`] after its restart, when no
/// partition and no frozen PR got in the way): every PE in `live` (registered over an intact
/// association at a live PR since [`replication_bound`] before now at least) is in the restarted
/// PR's handlespace.
pub fn restarted_pr_resolves_live_pes(
    pr: &PrView<'_>,
    live: &[RegisteredPe],
    restarted: Millis,
    now: Millis,
) -> Result<(), String> {
    for pe in live {
        let held = pr
            .cluster
            .workers()
            .iter()
            .any(|w| w.shard().entry(&pe.pool, pe.id).is_some());
        if !held {
            return Err(format!(
                "PR {} ({}) restarted at {restarted} ms and still lacks PE {} (registered at PR \
                 {} since {} ms) {} ms later",
                pr.index,
                pr.id,
                pe.id,
                pe.registrar,
                pe.since,
                now - restarted
            ));
        }
    }
    Ok(())
}

/// **A dead or silent PR's PEs are taken over** (at [`takeover_bound`] after PR `dead` died,
/// vanished or froze, when no partition and no other PR's crash, restart or freeze got in the
/// way): no live PR in `prs` still holds a PE with `dead` as its home PR; each was moved to a
/// live PR by the takeover, or re-registered elsewhere first.
pub fn dead_pr_pes_taken_over(
    prs: &[PrView<'_>],
    dead: PrId,
    since: Millis,
    now: Millis,
) -> Result<(), String> {
    for pr in prs {
        let orphans: Vec<PeId> = pr
            .entries()
            .into_iter()
            .filter(|(_, home)| *home == dead)
            .map(|((_, id), _)| id)
            .collect();
        if !orphans.is_empty() {
            return Err(format!(
                "PR {} ({}) still holds PEs {orphans:?} of PR {dead}, dead or silent since \
                 {since} ms, {} ms later",
                pr.index,
                pr.id,
                now - since
            ));
        }
    }
    Ok(())
}

/// **A deregistered PE is gone everywhere** (at [`deregistration_bound`] after it deregistered
/// from a whole scope, when no partition and no PR's crash, restart or freeze got in the way):
/// no live PR holds it.
pub fn deregistered_pe_gone(
    prs: &[PrView<'_>],
    pool: &[u8],
    id: PeId,
    since: Millis,
    now: Millis,
) -> Result<(), String> {
    for pr in prs {
        if let Some(home) = pr
            .cluster
            .workers()
            .iter()
            .find_map(|w| w.shard().entry(pool, id).map(|e| e.home_pr))
        {
            return Err(format!(
                "PE {id} deregistered at {since} ms and PR {} ({}) still holds it (home {home}) \
                 {} ms later",
                pr.index,
                pr.id,
                now - since
            ));
        }
    }
    Ok(())
}

/// **No PE is owned by two PRs** (settle): no two live PRs each hold the same PE with
/// themselves as its home PR.
pub fn no_pe_owned_twice(prs: &[PrView<'_>]) -> Result<(), String> {
    let mut owners: BTreeMap<(Vec<u8>, PeId), usize> = BTreeMap::new();
    for pr in prs {
        for (key, home) in pr.entries() {
            if home != pr.id {
                continue;
            }
            if let Some(first) = owners.insert(key.clone(), pr.index) {
                return Err(format!(
                    "PE {} of pool {} is owned by PR {first} and PR {} ({})",
                    key.1,
                    String::from_utf8_lossy(&key.0),
                    pr.index,
                    pr.id
                ));
            }
        }
    }
    Ok(())
}

/// How long after a pool last changed at a PR every subscriber of that PR has been pushed the
/// change (RFC 5352 §2.2.6), with `interval` the PRs' `subscriptions.min_push_interval`: a
/// change within the interval after a push waits for its end; the shard owner's note to the
/// subscriber's worker and that worker's timer take a few mailbox hops and a millisecond each
/// (a core's deadline is a lower bound); the push one [`BASE_DELAY`] (checked only at the end of
/// a quiet phase, without delay faults). With a 100 ms interval: 100 + 5 + 16 + 2 = 123 ms.
pub fn push_bound(interval: Millis) -> Millis {
    interval + BASE_DELAY + MAILBOX_HOPS * MAILBOX_DELAY + 2
}

/// What a handle resolution answers for a pool, as the subscription invariants compare it: the
/// PE IDs with their home PRs (empty for cause 0x9, Unknown Pool Handle), or another cause.
pub type PoolAnswer = Result<BTreeSet<(PeId, PrId)>, u16>;

/// One subscription a PU holds, as judged at the end of a quiet phase.
pub struct SubscriberView {
    /// The PU's index.
    pub pu: usize,
    /// The pool.
    pub pool: Vec<u8>,
    /// The index of the PR the subscription is at.
    pub pr: usize,
    /// The latest answer or push with the A bit the PU received over its association.
    pub pushed: PoolAnswer,
    /// What that PR answers for the pool now.
    pub current: PoolAnswer,
    /// When the PU received `pushed`.
    pub received: Millis,
}

/// **A subscriber sees its pool** (settle, RFC 5352 §2.2.5-6): a PU whose association to its
/// PR is up and whose subscription that PR answered with the A bit holds, from the latest answer
/// or push, the PEs (and their home PRs) the PR answers for the pool now. Judged only for pools
/// that did not change at that PR within [`push_bound`] (the push may still be owed).
pub fn subscribers_see_their_pools(views: &[SubscriberView]) -> Result<(), String> {
    for v in views {
        if v.pushed != v.current {
            return Err(format!(
                "PU {} subscribed to {} at PR {} holds {:?} (received at {} ms), the PR answers \
                 {:?}",
                v.pu,
                String::from_utf8_lossy(&v.pool),
                v.pr,
                v.pushed,
                v.received,
                v.current
            ));
        }
    }
    Ok(())
}

/// **Pushes go only to subscribers** (after every step, RFC 5352 §2.2.6): a handle resolution
/// response with the A bit reaches a PU only over an association on which it asked for that
/// pool with the S bit (`asked`: the pools it asked for on that association).
pub fn pushes_only_to_subscribers(
    pu: usize,
    asked: Option<&BTreeSet<Vec<u8>>>,
    pool: &[u8],
) -> Result<(), String> {
    if asked.is_some_and(|a| a.contains(pool)) {
        return Ok(());
    }
    Err(format!(
        "PU {pu} received a response with the A bit for {} over an association it did not \
         subscribe on",
        String::from_utf8_lossy(pool)
    ))
}

/// **Nothing goes to a closed association** (after every step): a PR sends no message to an
/// association after it was told that it closed or aborted it (`closed_at`: when).
pub fn nothing_sent_after_close(
    pr: usize,
    association: u64,
    first_byte: Option<u8>,
    closed_at: Option<Millis>,
) -> Result<(), String> {
    match closed_at {
        None => Ok(()),
        Some(at) => Err(format!(
            "PR {pr} sends a message (type {first_byte:?}) to association {association:#x}, \
             closed at {at} ms"
        )),
    }
}
