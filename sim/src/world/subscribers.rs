//! Subscriptions (RFC 5352 §2.2.5-6) as the simulated PUs see them on the wire: the pools each
//! PU asked for with the S bit on each association, the latest answer or push with the A bit
//! per pool, the safety checks on every message (a push only where the PU subscribed, nothing
//! sent to a closed association), and, at the end of a quiet phase, each subscriber's pushed
//! view against what its PR answers for the pool then. The PU core (`PoolUser::subscribe`)
//! subscribes and subscribes again after a lost association; the simulation only reads the
//! messages, so a PU core bug cannot hide a registrar's.

use rserpool_protocol::{AsapMessage, Resolution, cause};
use rserpool_registrar::core::worker_of;

use super::*;
use crate::invariants::{PoolAnswer, SubscriberView};

/// The latest answer or push with the A bit a PU received for a pool.
pub(super) struct Pushed {
    /// The link it came over.
    link: LinkId,
    /// When.
    at: Millis,
    /// What it said.
    answer: PoolAnswer,
}

impl World {
    /// PU `k` sends `bytes` on `link`: a handle resolution with the S bit subscribes there; the
    /// view of the pool from another association is unknown from now on (RFC 5352 §2.2.5: the
    /// old PR's acceptance ended with its association).
    pub(super) fn pu_sends(&mut self, k: usize, link: LinkId, bytes: &[u8]) {
        let Ok(decoded) = AsapMessage::decode(bytes, Generation::Rfc) else {
            return;
        };
        let AsapMessage::HandleResolution {
            subscribe: true,
            pool_handle,
            ..
        } = decoded.message
        else {
            return;
        };
        let pool = pool_handle.0.to_vec();
        let pu = &mut self.pus[k];
        if pu.pushed.get(&pool).is_some_and(|p| p.link != link) {
            pu.pushed.remove(&pool);
        }
        pu.asked.entry(link).or_default().insert(pool);
    }

    /// PU `k` receives `bytes` over `link`: a handle resolution response with the A bit must
    /// answer or follow an S bit the PU sent on this association (RFC 5352 §2.2.6), and becomes
    /// its view of the pool.
    pub(super) fn pu_receives(&mut self, k: usize, link: LinkId, bytes: &[u8]) {
        let Ok(decoded) = AsapMessage::decode(bytes, Generation::Rfc) else {
            return;
        };
        let AsapMessage::HandleResolutionResponse {
            accepted: true,
            pool_handle,
            resolution,
        } = decoded.message
        else {
            return;
        };
        self.summary.pushes += 1;
        let pool = pool_handle.0.to_vec();
        let r = invariants::pushes_only_to_subscribers(k, self.pus[k].asked.get(&link), &pool);
        self.fail("pushes_only_to_subscribers", r);
        let answer = match resolution {
            Resolution::Found { pool_elements, .. } => {
                Ok(pool_elements.iter().map(|p| (p.id, p.home_pr)).collect())
            }
            Resolution::Failed(error) => match error.iter().next() {
                Some(c) if c.code == cause::UNKNOWN_POOL_HANDLE => Ok(BTreeSet::new()),
                Some(c) => Err(c.code),
                None => Err(0),
            },
        };
        tracing::debug!(t = self.now(), pu = k, pool = %String::from_utf8_lossy(&pool), ?answer, "A bit");
        let at = self.now();
        self.pus[k].pushed.insert(pool, Pushed { link, at, answer });
    }

    /// Records when the published snapshot of each pool at PR `only` (or at every PR) last
    /// changed, for [`invariants::push_bound`].
    pub(super) fn track_pools(&mut self, only: Option<usize>) {
        let now = self.now();
        for (i, pr) in self.prs.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let Some(cluster) = pr.cluster.as_ref() else {
                continue;
            };
            let reader = cluster.workers()[0].reader();
            for p in 0..self.scenario.pools {
                let pool = pool_handle(p);
                let serial = reader.snapshot(&pool).map_or(0, |s| s.serial());
                let slot = self.pool_changes.entry((i, pool)).or_insert((serial, now));
                if slot.0 != serial {
                    *slot = (serial, now);
                }
            }
        }
    }

    /// PR `i` learns that association `a` closed or that it aborted it: nothing goes there
    /// any more.
    pub(super) fn note_closed(&mut self, i: usize, a: AssociationId) {
        let now = self.now();
        let incarnation = self.prs[i].incarnation;
        self.closed_associations
            .entry((i, incarnation, a.get()))
            .or_insert(now);
    }

    /// PR `i` sends `bytes` to association `a`.
    pub(super) fn check_sent(&mut self, i: usize, a: AssociationId, bytes: &[u8]) {
        let incarnation = self.prs[i].incarnation;
        let closed = self
            .closed_associations
            .get(&(i, incarnation, a.get()))
            .copied();
        let r = invariants::nothing_sent_after_close(i, a.get(), bytes.first().copied(), closed);
        self.fail("nothing_sent_after_close", r);
    }

    /// Whether `link` is an association up at both ends with the current incarnation of a
    /// running PR.
    fn link_up(&self, link: LinkId) -> bool {
        let l = &self.net.links[link];
        let Node::Pr(i) = l.ends[1].node else {
            return false;
        };
        let pr = &self.prs[i];
        l.established
            && !l.broken
            && l.ends[0].open
            && l.ends[1].open
            && pr.cluster.is_some()
            && !pr.frozen
            && l.ends[1].incarnation == pr.incarnation
    }

    /// Every subscription answered with the A bit over an association still up, on a pool that
    /// did not change at its PR within [`invariants::push_bound`], with the PR's answer now.
    pub(super) fn subscriber_views(&self) -> Vec<SubscriberView> {
        let now = self.now();
        let bound = invariants::push_bound(self.scenario.push_interval);
        let mut views = Vec::new();
        for (k, pu) in self.pus.iter().enumerate() {
            for (pool, pushed) in &pu.pushed {
                if !self.link_up(pushed.link) {
                    continue;
                }
                let end = self.net.links[pushed.link].ends[1];
                let (Node::Pr(i), Some(Handle::Association(a))) = (end.node, end.handle) else {
                    continue;
                };
                let changed = self
                    .pool_changes
                    .get(&(i, pool.clone()))
                    .map_or(0, |&(_, at)| at);
                if now < changed + bound {
                    continue;
                }
                let cluster = self.prs[i].cluster.as_ref().expect("up");
                let current = cluster.workers()[worker_of(a)]
                    .reader()
                    .snapshot(pool)
                    .map(|s| {
                        s.entries()
                            .filter(|e| e.fits(Generation::Rfc))
                            .map(|e| (e.id(), e.home_pr))
                            .collect()
                    })
                    .unwrap_or_default();
                views.push(SubscriberView {
                    pu: k,
                    pool: pool.clone(),
                    pr: i,
                    pushed: pushed.answer.clone(),
                    current: Ok(current),
                    received: pushed.at,
                });
            }
        }
        views
    }
}
