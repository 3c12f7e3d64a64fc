//! The checks: liveness obligations a fault starts, judged at their deadline against the
//! faults that happened meanwhile, and the safety invariants after every step and once settled.

use super::*;

impl World {
    // ---- liveness obligations ----

    /// Records an obligation and judges it `bound` from now (later if delay faults stretch the
    /// bound meanwhile).
    pub(super) fn oblige(&mut self, obligation: Obligation, bound: Millis) {
        let k = self.obligations.len();
        self.obligations.push(obligation);
        let at = self.now() + bound;
        self.net.schedule(at, Event::Check(k));
    }

    /// The most extra one-way delay in effect at some time in `from..=to`.
    pub(super) fn max_extra_delay(&self, from: Millis, to: Millis) -> Millis {
        let before = self
            .delays
            .iter()
            .rev()
            .find(|(t, _)| *t <= from)
            .map_or(0, |(_, e)| *e);
        self.delays
            .iter()
            .filter(|(t, _)| *t > from && *t <= to)
            .map(|(_, e)| *e)
            .fold(before, Millis::max)
    }

    /// Whether one of `intervals` overlaps `from..=to`.
    pub(super) fn overlaps(intervals: &[(Millis, Millis)], from: Millis, to: Millis) -> bool {
        intervals.iter().any(|&(a, b)| a <= to && b >= from)
    }

    /// Whether a PR was frozen at some time in `from..=to`.
    pub(super) fn frozen_between(&self, from: Millis, to: Millis) -> bool {
        self.freezes.iter().any(|&(a, b, _)| a <= to && b >= from)
    }

    /// Whether a PR other than `except` crashed, started, froze or thawed in `from..=to`.
    pub(super) fn others_changed(&self, except: Option<usize>, from: Millis, to: Millis) -> bool {
        self.pr_changes
            .iter()
            .any(|&(t, i, _)| t >= from && t <= to && Some(i) != except)
    }

    /// Whether PR `pr` came back with an ID other than `dead` after `from` and that later
    /// incarnation crashed or vanished by `to`: for the takeover of `dead` another peer died, whose
    /// acknowledgement the takeover waits for until it is detected or the takeover expires (seed
    /// 3606: PR 2 vanished, came back with a new ID 76 ms later and crashed 1.1 s after that, 3 ms
    /// before a peer started the takeover of its old ID and counted the new one among the acks).
    pub(super) fn later_incarnation_died(
        &self,
        pr: usize,
        dead: PrId,
        from: Millis,
        to: Millis,
    ) -> bool {
        let mut back = false;
        for &(t, i, id) in &self.pr_changes {
            if i != pr || t < from || t > to {
                continue;
            }
            match id {
                Some(id) if id != dead => back = true,
                None if back => return true,
                _ => {}
            }
        }
        false
    }

    /// Whether PR ID `id` came back (a thaw, a restart with the same ID) after `from`.
    pub(super) fn revived(&self, id: PrId, from: Millis) -> bool {
        self.pr_changes
            .iter()
            .any(|&(t, _, back)| t >= from && back == Some(id))
    }

    /// Whether the scope is whole for PE `index`'s deregistration: no partition, every PR up,
    /// not frozen, live and knowing the others; the PE registered over an intact association;
    /// and every PR holding it with its registrar as home.
    pub(super) fn scope_whole_for(&self, index: usize) -> bool {
        if self.cut.is_some() || self.prs.iter().any(|p| p.frozen) {
            return false;
        }
        let Some(registrar) = self.registrar_of(index) else {
            return false;
        };
        if !self.association_intact(index, registrar) {
            return false;
        }
        let views = self.views();
        if invariants::scope_formed(&views, self.prs.len()).is_err() {
            return false;
        }
        let pe = &self.pes[index];
        let (pool, id) = (pool_handle(pe.pool), pe.core.id());
        let home = self.prs[registrar].id;
        views.iter().all(|v| {
            v.cluster
                .workers()
                .iter()
                .find_map(|w| w.shard().entry(&pool, id).map(|e| e.home_pr))
                == Some(home)
        })
    }

    /// Judges obligation `k` at its deadline, unless a partition, a freeze or another PR's
    /// crash or restart got in the way (then its bound does not apply).
    pub(super) fn check_obligation(&mut self, k: usize) {
        let now = self.now();
        let obligation = self.obligations[k].clone();
        let since = obligation.since();
        // A message sent after a delay fault ended still arrives after those sent before it on
        // its association: the delays of the last longest one-way delay before count too.
        let extra = self.max_extra_delay(since.saturating_sub(invariants::MAX_ONE_WAY), now);
        let bound = match &obligation {
            Obligation::Startup { .. } => invariants::startup_bound(extra, self.table_pages()),
            Obligation::Takeover { .. } => invariants::takeover_bound(extra),
            Obligation::Deregistered { .. } => invariants::deregistration_bound(extra),
        };
        if now < since + bound {
            self.net.schedule(since + bound, Event::Check(k));
            return;
        }
        if Self::overlaps(&self.partitions, since, now) {
            return;
        }
        match obligation {
            Obligation::Startup {
                pr,
                incarnation,
                since,
            } => {
                if self.prs[pr].incarnation != incarnation
                    || self.prs[pr].cluster.is_none()
                    || self.frozen_between(since, now)
                {
                    return;
                }
                let settled = now - invariants::replication_bound(extra);
                let live: Vec<RegisteredPe> = self
                    .registered_pes(None)
                    .into_iter()
                    .filter(|p| {
                        p.since <= settled
                            && !self.prs[p.registrar].frozen
                            && self.association_intact(p.index, p.registrar)
                    })
                    .collect();
                self.summary.liveness_checks += 1;
                let views = self.views();
                let view = views.iter().find(|v| v.index == pr).expect("up");
                let r = invariants::restarted_pr_resolves_live_pes(view, &live, since, now);
                drop(views);
                self.fail("restarted_pr_resolves_live_pes", r);
            }
            Obligation::Takeover { pr, dead, since } => {
                // The other PRs were whole from a detection time before: a death not yet
                // detected, or a peer still frozen, blocks a takeover until it expires
                // (every live peer must acknowledge it, RFC 5353 §3.5.1).
                let calm =
                    since.saturating_sub(invariants::takeover_bound(invariants::MAX_EXTRA_DELAY));
                if self.revived(dead, since)
                    || self.others_changed(Some(pr), calm, now)
                    || self.later_incarnation_died(pr, dead, since, now)
                    || self.freezes.iter().any(|&(a, b, i)| {
                        // Its own freeze is the fault; a later incarnation's is another PR's.
                        a <= now && b >= calm && !(i == pr && a <= since)
                    })
                    || Self::overlaps(&self.partitions, calm, now)
                {
                    return;
                }
                self.summary.liveness_checks += 1;
                let views: Vec<PrView<'_>> =
                    self.views().into_iter().filter(|v| v.index != pr).collect();
                let r = invariants::dead_pr_pes_taken_over(&views, dead, since, now);
                drop(views);
                self.fail("dead_pr_pes_taken_over", r);
            }
            Obligation::Deregistered { id, pool, since } => {
                if self.others_changed(None, since, now) || self.frozen_between(since, now) {
                    return;
                }
                self.summary.liveness_checks += 1;
                let views = self.views();
                let r = invariants::deregistered_pe_gone(&views, &pool, id, since, now);
                drop(views);
                self.fail("deregistered_pe_gone", r);
            }
        }
    }

    // ---- invariants ----

    pub(super) fn views(&self) -> Vec<PrView<'_>> {
        self.prs
            .iter()
            .enumerate()
            .filter_map(|(index, p)| {
                p.cluster.as_ref().map(|cluster| PrView {
                    index,
                    id: p.id,
                    cluster,
                })
            })
            .collect()
    }

    /// The PEs registered at a PR, all of them or those the last step touched (`only`: a PE, or
    /// the PEs registered at a PR).
    pub(super) fn registered_pes(&self, only: Option<Node>) -> Vec<RegisteredPe> {
        let mut registered = Vec::new();
        for (i, p) in self.pes.iter().enumerate() {
            if only.is_some_and(|n| matches!(n, Node::Pe(j) if j != i)) {
                continue;
            }
            let Some(pr) = self.registrar_of(i) else {
                continue;
            };
            if only.is_some_and(|n| matches!(n, Node::Pr(k) if k != pr)) {
                continue;
            }
            registered.push(RegisteredPe {
                id: p.core.id(),
                pool: pool_handle(p.pool),
                index: i,
                registrar: pr,
                since: p.registered_since.map_or(self.net.now(), |(_, t)| t),
            });
        }
        registered
    }

    /// Whether PE `pe` has an intact association (established, unbroken, open at both ends) with
    /// the current incarnation of PR `pr`.
    pub(super) fn association_intact(&self, pe: usize, pr: usize) -> bool {
        let incarnation = self.prs[pr].incarnation;
        self.net.active_links().any(|l| {
            l.ends[0].node == Node::Pe(pe)
                && l.ends[0].open
                && l.established
                && !l.broken
                && l.ends[1].open
                && l.ends[1].node == Node::Pr(pr)
                && l.ends[1].incarnation == incarnation
        })
    }

    /// The cheap invariants, over what the last step touched (`None`: everything): a PR's
    /// handlespace is checked after every step of that PR (each PR runs its timers at least
    /// every ENRP tick, so a PE held too long is found within a tick), a PE after every step
    /// of that PE.
    pub(super) fn check_step(&mut self, touched: Option<Node>) {
        if matches!(touched, Some(Node::Pu(_))) {
            return;
        }
        let now = self.now();
        let views: Vec<PrView<'_>> = self
            .views()
            .into_iter()
            .filter(|v| !matches!(touched, Some(Node::Pr(i)) if i != v.index))
            .collect();
        // A frozen PR answers no resolution and runs no expiry timer until it goes on.
        let r = if matches!(touched, Some(Node::Pe(_))) {
            Ok(())
        } else {
            let running: Vec<PrView<'_>> = views
                .iter()
                .filter(|v| !self.prs[v.index].frozen)
                .map(|v| PrView {
                    index: v.index,
                    id: v.id,
                    cluster: v.cluster,
                })
                .collect();
            invariants::handlespaces_hold_only_registered_pes(&self.ledger, &running, now)
        };
        let registered = self.registered_pes(touched);
        let r2 = invariants::registrars_hold_their_pes(&registered, &views, |pe| {
            self.association_intact(pe.index, pe.registrar)
        });
        drop(views);
        self.fail("handlespaces_hold_only_registered_pes", r);
        self.fail("registrars_hold_their_pes", r2);
    }

    pub(super) fn check_settled(&mut self) {
        let views = self.views();
        let registered = self.registered_pes(None);
        let checks = [
            (
                "scope_formed",
                invariants::scope_formed(&views, self.prs.len()),
            ),
            (
                "live_pes_resolvable_everywhere",
                invariants::live_pes_resolvable_everywhere(&self.ledger, &registered, &views),
            ),
            ("no_pe_owned_twice", invariants::no_pe_owned_twice(&views)),
            (
                "handlespaces_converge",
                invariants::handlespaces_converge(&views),
            ),
        ];
        drop(views);
        let subscribers = self.subscriber_views();
        self.summary.subscription_checks += subscribers.len() as u64;
        let r = invariants::subscribers_see_their_pools(&subscribers);
        for (name, result) in checks {
            self.fail(name, result);
        }
        self.fail("subscribers_see_their_pools", r);
    }
}
